"""Prints the top labels of AudioSet clips with an exported model (no training code needed).

    python predict.py --saved_model DIR --input 'clips/*.tfrecord' [--top_k 5] [--output preds.jsonl]

Reads AudioSet-format TFRecords of any clip length; label names come from the model's own asset.
Records that are not valid clips are skipped, counted by reason and reported at the end.
"""

from __future__ import annotations

import argparse
import json
import sys

import models  # noqa: F401  (quiet TensorFlow logs before it loads)
import numpy as np
import tensorflow as tf

from models import evaluation
from tfdata import readers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--saved_model", required=True)
    parser.add_argument("--input", required=True, help="glob of AudioSet TFRecords")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--output", help="also write one JSON line per clip here")
    parser.add_argument("--max_clips", type=int, help="stop after this many clips")
    parser.add_argument("--batch_size", type=int, default=256)
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top_k must be positive")
    if args.max_clips is not None and args.max_clips < 1:
        parser.error("--max_clips must be positive")
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    try:
        names = evaluation.class_names(args.saved_model)
        scored = evaluation.score([args.saved_model], readers.list_files(args.input), args.batch_size,
                                   progress=None, any_length=True)
    except (OSError, ValueError, tf.errors.OpError) as e:
        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 1
    out = tf.io.gfile.GFile(args.output, "w") if args.output else None
    rows = zip(scored.video_id, scored.start_time_seconds, scored.scores)
    for video_id, start, scores in list(rows)[:args.max_clips]:
        top = np.argsort(-scores, kind="stable")[:args.top_k]
        labels = [{"index": int(c), "name": names[c], "score": float(scores[c])} for c in top]
        print(f"{video_id.decode()} {start:7.1f}s  " + ", ".join(f"{l['name']} {l['score']:.3f}" for l in labels))
        if out:
            out.write(json.dumps({"video_id": video_id.decode(), "start_time_seconds": float(start),
                                  "top": labels}) + "\n")
    if out:
        out.close()
    if scored.skipped:
        print(f"skipped invalid records: {scored.skipped}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
