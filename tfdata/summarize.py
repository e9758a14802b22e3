"""Reads AudioSet clips back and prints a short summary.

    python -m tfdata.summarize 'DIR/*.tfrecord' [--class_labels class_labels_indices.csv]
    python -m tfdata.summarize DIR/clips.h5

Works on the original release, on synthetic data and on plain shards; counts invalid records by reason.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from tfdata import schema


def summarize(dataset) -> dict:
    """Counts over a dataset of tfdata.readers batches."""
    clips = short = label_occurrences = 0
    class_counts = np.zeros(schema.NUM_CLASSES, np.int64)
    reasons = np.zeros(len(schema.REASON_CODES), np.int64)
    for batch in dataset.as_numpy_iterator():
        valid = batch["reason"] == 0
        reasons += np.bincount(batch["reason"], minlength=len(schema.REASON_CODES))
        clips += int(valid.sum())
        short += int((batch["num_frames"][valid] < schema.NUM_FRAMES).sum())
        class_counts += batch[schema.LABELS_KEY][valid].sum(axis=0, dtype=np.int64)
        label_occurrences += int(batch[schema.LABELS_KEY][valid].sum())
    return {"clips": clips, "short_clips": short, "label_occurrences": label_occurrences,
            "class_counts": class_counts,
            "invalid": {name: int(n) for name, n in zip(schema.REASON_CODES[1:], reasons[1:]) if n}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input", help="a glob of TFRecords, or an HDF5 file (.h5/.hdf5)")
    parser.add_argument("--class_labels", help=f"{schema.CLASS_LABELS_FILE}, to print class names")
    args = parser.parse_args(argv)
    import tensorflow as tf  # after parsing: --help does not wait for TensorFlow

    from tfdata import readers

    try:
        if args.input.endswith((".h5", ".hdf5")):
            readers.hdf5_datasets(args.input)
            dataset = readers.read_hdf5(args.input)
        else:
            dataset = readers.read_tfrecords(args.input)
        names = schema.read_class_labels(args.class_labels).names if args.class_labels else None
        s = summarize(dataset)
    except tf.errors.DataLossError:
        print(f"error: {readers.find_data_loss(readers.list_files(args.input))}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, tf.errors.OpError) as e:
        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 2
    counts = s["class_counts"]
    print(f"clips: {s['clips']}  ({s['short_clips']} shorter than {schema.NUM_FRAMES} frames)")
    print(f"labels: {s['label_occurrences']} occurrences, {s['label_occurrences'] / max(s['clips'], 1):.2f} per clip, "
          f"{(counts > 0).sum()} of {schema.NUM_CLASSES} classes present")
    print(f"invalid records: {sum(s['invalid'].values())} {s['invalid'] or ''}".rstrip())
    print("most frequent classes:")
    for c in np.argsort(-counts, kind="stable")[:5]:
        print(f"  {c:3d} {names[c] if names else '':32s} {counts[c]:8d} clips ({counts[c] / max(s['clips'], 1):.1%})")
    print(f"rarest class: {counts.min()} clips; median class: {int(np.median(counts))} clips")
    return 0


if __name__ == "__main__":
    sys.exit(main())
