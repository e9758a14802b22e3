"""Prints the top labels of AudioSet clips with an exported model (no training code needed).

    python predict.py --saved_model DIR --input 'clips/*.tfrecord' [--top_k 5] [--output preds.csv|preds.jsonl]

Reads AudioSet-format TFRecords of any clip length, or shards written by the Beam job (their plain
split), as evaluate.py does; label names come from the model's own asset. When the records carry
labels, each line ends with the clip's true labels. --output writes one row per clip: CSV (video_id,
start_time_seconds, label_1, score_1, ... label_K, score_K, true_labels) when it ends in .csv, else
JSON lines. Records that are not valid clips are skipped, counted by reason and reported at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys

import models  # noqa: F401  (quiet TensorFlow logs before it loads)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
AUDIO_MAGIC = {b"RIFF": "WAV", b"fLaC": "FLAC", b"OggS": "Ogg", b"ID3": "MP3"}


def looks_like_audio(path: str) -> str | None:
    """The kind of sound file `path` is (by extension or magic bytes), or None. Local files only."""
    if path.lower().endswith(AUDIO_EXTENSIONS):
        return os.path.splitext(path)[1][1:].upper()
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    return next((kind for magic, kind in AUDIO_MAGIC.items() if head.startswith(magic)), None)


def csv_rows(rows: list[dict], top_k: int) -> str:
    """One CSV row per clip: video_id, start_time_seconds, the top-k labels and scores, the true labels."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["video_id", "start_time_seconds"]
                    + [f"{c}_{i}" for i in range(1, top_k + 1) for c in ("label", "score")] + ["true_labels"])
    for row in rows:
        top = [v for t in row["top"] for v in (t["name"], f"{t['score']:.6f}")]
        writer.writerow([row["video_id"], row["start_time_seconds"], *top, "; ".join(row.get("true_labels", []))])
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--saved_model", required=True, help="an exported model, or the model dir of train.py")
    parser.add_argument("--input", required=True,
                        help="glob of AudioSet TFRecords, or a shards directory or its plain split")
    parser.add_argument("--top_k", type=int, default=5, help="labels printed per clip")
    parser.add_argument("--output", help="also write one row per clip here: CSV if it ends in .csv, else JSON lines")
    parser.add_argument("--max_clips", type=int, help="stop after this many clips")
    parser.add_argument("--batch_size", type=int, default=256, help="clips scored per call")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top_k must be positive")
    audio = next(((p, k) for p in args.input.split(",") if (k := looks_like_audio(p.strip()))), None)
    if audio:
        print(f"error: {audio[0]} looks like a sound file ({audio[1]}), not AudioSet embeddings (TFRecords); "
              f"give sound files with --audio FILE", file=sys.stderr)
        return 2
    import numpy as np
    import tensorflow as tf  # after parsing: --help does not wait for TensorFlow

    from models import evaluation
    from tfdata import datasets, readers

    try:
        if args.output and tf.io.gfile.isdir(args.output):
            raise IsADirectoryError(f"--output {args.output} is a directory; give a file name (.csv or .jsonl)")
        saved_model = evaluation.resolve_saved_model(args.saved_model)
        names = evaluation.class_names(saved_model)
        scored = evaluation.score([saved_model], datasets.eval_files(args.input), args.batch_size,
                                  progress=None, any_length=True)
    except (OSError, ValueError, tf.errors.OpError) as e:
        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 1
    rows = []
    for video_id, start, scores, labels in list(zip(scored.video_id, scored.start_time_seconds, scored.scores,
                                                    scored.labels))[:args.max_clips]:
        top = np.argsort(-scores, kind="stable")[:args.top_k]
        row = {"video_id": video_id.decode(), "start_time_seconds": float(start),
               "top": [{"index": int(c), "name": names[c], "score": float(scores[c])} for c in top]}
        line = f"{row['video_id']} {start:7.1f}s  " + ", ".join(f"{t['name']} {t['score']:.3f}" for t in row["top"])
        if labels.any():  # records without labels (e.g. from new audio) carry none
            row["true_labels"] = [names[c] for c in np.flatnonzero(labels)]
            line += "  [true: " + ", ".join(row["true_labels"]) + "]"
        print(line)
        rows.append(row)
    if args.output:
        with tf.io.gfile.GFile(args.output, "w") as out:
            if args.output.endswith(".csv"):
                out.write(csv_rows(rows, args.top_k))
            else:
                out.write("".join(json.dumps(row) + "\n" for row in rows))
    if scored.skipped:
        print(f"skipped invalid records: {scored.skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
