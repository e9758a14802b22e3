"""Evaluates exported models on AudioSet clips: mAP, AUC, d-prime, per class, with a plot.

    python evaluate.py --saved_model DIR [DIR ...] --data PATH --output_dir R [--train_manifest M]
    python evaluate.py --compare R1 R2 ... [--output table.md]

--data is a glob of AudioSet TFRecords (e.g. the release's eval/*.tfrecord) or shards written by
the Beam job (their plain split). Several --saved_model values average their scores first.
Invalid records are skipped, counted by reason and reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import evaluation  # noqa: F401  (quiet TensorFlow logs before it loads)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--saved_model", nargs="+",
                        help="one or more exported models (or train.py model dirs); scores are averaged")
    parser.add_argument("--data", help="glob of AudioSet TFRecords, or a shards directory or its plain split")
    parser.add_argument("--output_dir", help="where metrics.json, per_class.csv, scores.npz, per_class.png go")
    parser.add_argument("--train_manifest", help="the training shards' manifest.json: x axis of the plot")
    parser.add_argument("--batch_size", type=int, default=1024, help="clips scored per call")
    parser.add_argument("--bootstrap", type=int, default=200,
                        help="resamples of the clips for a 95%% interval of mAP (0: none)")
    parser.add_argument("--compare", nargs="+", metavar="R", help="print a table of several evaluations")
    parser.add_argument("--output", help="with --compare: also write the table (Markdown) here")
    args = parser.parse_args(argv)
    import numpy as np
    import tensorflow as tf  # after parsing: --help does not wait for TensorFlow

    from evaluation import report, scoring
    from models import metrics
    from tfdata import datasets, readers

    try:
        if args.compare:
            table = report.compare(args.compare)
            print(table, end="")
            if args.output:
                with tf.io.gfile.GFile(args.output, "w") as f:
                    f.write(table)
            return 0
        if not (args.saved_model and args.data and args.output_dir):
            parser.error("--saved_model, --data and --output_dir are required (or use --compare)")
        if args.batch_size < 1:
            parser.error("--batch_size must be positive")
        if args.bootstrap < 0 or args.bootstrap == 1:
            parser.error("--bootstrap must be 0 (no interval) or at least 2")
        report.check_output_dir(args.output_dir)  # before the work, not after it
        saved_models = [scoring.resolve_saved_model(p) for p in args.saved_model]
        train_counts = None
        if args.train_manifest:
            try:
                with tf.io.gfile.GFile(args.train_manifest) as f:
                    train_counts = np.array(json.load(f)["class_counts"])
            except ValueError as e:  # a truncated or unfinished manifest
                raise ValueError(f"{args.train_manifest}: not a valid manifest ({e}); rebuild the shards") from None
        names = scoring.class_names(saved_models[0])
        scored = scoring.score(saved_models, datasets.eval_files(args.data), args.batch_size, progress=sys.stderr)
        result = metrics.compute(scored.labels, scored.scores)
        interval = (metrics.bootstrap_map(scored.labels, scored.scores, args.bootstrap)
                    if args.bootstrap else None)
        report.write_results(args.output_dir, scored, result, names, saved_models, args.data, train_counts,
                                 interval)
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 1
    report.print_table(result, names, sys.stdout)  # the streams of now, not of import time
    if interval:
        print(f"mAP 95% interval {interval[0]:.4f} - {interval[1]:.4f} "
              f"(bootstrap over the {result.num_clips} clips, {args.bootstrap} resamples)")
    if scored.skipped:
        print(f"skipped invalid records: {scored.skipped}")
    print(f"wrote {os.path.join(args.output_dir, 'metrics.json')} and per_class.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
