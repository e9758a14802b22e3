"""Prints the top labels of AudioSet clips with an exported model (no training code needed).

    python predict.py --saved_model DIR --input 'clips/*.tfrecord' [--top_k 5] [--output preds.jsonl]

Reads AudioSet-format TFRecords of any clip length; label names come from the model's own asset.
Records that are not valid clips are skipped, counted by reason and reported at the end.

    python predict.py --saved_model OUT --audio FILE [FILE ...] [--top_k 5] [--output top.csv] \
        [--timeline timeline.csv] [--plot timeline.png]

Sound files (WAV, FLAC, OGG, MP3, any rate, mono or stereo) with a model exported by
`python -m models.exporting --audio` (serve_waveform): the top classes of each file, its timeline
(top classes of each 0.96-s VGGish example) and a heat map of it. Files are decoded and resampled to
16 kHz with tfdata.audio.load, as beam_pipelines.embed_audio does; a file that is not audio or is
too short gets one line on stderr and the others are still predicted (exit status 1 if any failed).
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
    if "--audio" in (sys.argv[1:] if argv is None else argv):
        return predict_audio(sys.argv[1:] if argv is None else argv)
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


# --- Sound files (--audio) ----------------------------------------------------------------------------

def predict_audio(argv: list[str]) -> int:
    """The --audio path: sound files -> serve_waveform -> top classes, timeline CSV, heat map."""
    from tfdata import audio

    parser = argparse.ArgumentParser(description="Top classes and a per-second timeline of sound files.")
    parser.add_argument("--saved_model", required=True, help="exported with python -m models.exporting --audio")
    parser.add_argument("--audio", nargs="+", required=True, help="sound files")
    parser.add_argument("--top_k", type=int, default=5)
    parser.add_argument("--output", help="CSV of each file's top classes: file,rank,index,name,score")
    parser.add_argument("--timeline", help="CSV of each example's top classes: file,start_seconds,end_seconds,rank,"
                                           "index,name,score")
    parser.add_argument("--plot", help="PNG heat map per file: top classes x seconds")
    args = parser.parse_args(argv)
    if args.top_k < 1:
        parser.error("--top_k must be positive")
    try:
        model = tf.saved_model.load(args.saved_model)
        names = evaluation.class_names(args.saved_model)
    except (OSError, ValueError, tf.errors.OpError) as e:
        print(f"error: {readers.error_message(e)}", file=sys.stderr)
        return 1
    if "serve_waveform" not in model.signatures:
        print(f"error: {args.saved_model} has no serve_waveform signature; export it with "
              "python -m models.exporting --audio (README, 'Your own audio')", file=sys.stderr)
        return 1
    results, failed = [], 0
    for path in args.audio:
        try:
            loaded = audio.load(path)
        except audio.AudioError as e:
            print(f"{path}: skipped, {e.reason.replace('_', ' ')}: {e.detail}", file=sys.stderr)
            failed += 1
            continue
        out = model.signatures["serve_waveform"](waveform=tf.constant(loaded.waveform[None]))
        scores, frame_scores = out["scores"].numpy()[0], out["frame_scores"].numpy()[0]  # [527], [T, 527]
        top = _top(scores, args.top_k)
        print(f"{path} ({loaded.seconds:.1f} s)  " + ", ".join(f"{names[c]} {scores[c]:.3f}" for c in top))
        results.append((path, scores, frame_scores))
    if args.output:
        _write_top_csv(args.output, results, names, args.top_k)
    if args.timeline:
        _write_timeline_csv(args.timeline, results, names, args.top_k)
    if args.plot and results:
        plot_timelines(args.plot, results, names, args.top_k)
    return 1 if failed else 0


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-scores, kind="stable")[:k]


def _write_top_csv(path: str, results: list, names, k: int) -> None:
    import csv

    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "rank", "index", "name", "score"])
        for file, scores, _ in results:
            for rank, c in enumerate(_top(scores, k), start=1):
                writer.writerow([file, rank, int(c), names[c], f"{scores[c]:.6f}"])


def _write_timeline_csv(path: str, results: list, names, k: int) -> None:
    import csv

    from tfdata import audio

    step = audio.PARAMS.example_hop_seconds
    with tf.io.gfile.GFile(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["file", "start_seconds", "end_seconds", "rank", "index", "name", "score"])
        for file, _, frame_scores in results:
            for t, scores in enumerate(frame_scores):
                for rank, c in enumerate(_top(scores, k), start=1):
                    writer.writerow([file, f"{t * step:.2f}", f"{(t + 1) * step:.2f}", rank, int(c), names[c],
                                     f"{scores[c]:.6f}"])


def plot_timelines(path: str, results: list, names, k: int) -> None:
    """One heat map per file: the k classes with the highest score in any example x seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfdata import audio

    step = audio.PARAMS.example_hop_seconds
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 1.2 + 0.35 * k * len(results) + 0.6 * len(results)),
                             squeeze=False)
    for ax, (file, _, frame_scores) in zip(axes[:, 0], results):
        classes = _top(frame_scores.max(axis=0), k)  # [k]
        image = ax.imshow(frame_scores[:, classes].T, aspect="auto", origin="upper", vmin=0.0, vmax=1.0,
                          cmap="magma", extent=(0, len(frame_scores) * step, k, 0), interpolation="nearest")
        ax.set_yticks(np.arange(k) + 0.5, [names[c] for c in classes], fontsize=8)
        ax.set_title(file.rsplit("/", 1)[-1], fontsize=9)
        ax.set_xlabel("seconds")
        fig.colorbar(image, ax=ax, label="score")
    fig.tight_layout()
    with tf.io.gfile.GFile(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
