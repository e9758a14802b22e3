"""Prints the top labels of AudioSet clips with an exported model (no training code needed).

    python predict.py --saved_model DIR --input 'clips/*.tfrecord' [--top_k 5] [--output preds.csv|preds.jsonl]

Reads AudioSet-format TFRecords of any clip length, or shards written by the Beam job (their plain
split), as evaluate.py does; label names come from the model's own asset. When the records carry
labels, each line ends with the clip's true labels. --output writes one row per clip: CSV (video_id,
start_time_seconds, label_1, score_1, ... label_K, score_K, true_labels) when it ends in .csv, else
JSON lines. Records that are not valid clips are skipped, counted by reason and reported at the end.

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
import csv
import io
import json
import os
import sys

import evaluation  # noqa: F401  (quiet TensorFlow logs before it loads)
import numpy as np

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
    if "--audio" in (sys.argv[1:] if argv is None else argv):
        return predict_audio(sys.argv[1:] if argv is None else argv)
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
    if args.max_clips is not None and args.max_clips < 1:
        parser.error("--max_clips must be positive")
    if args.batch_size < 1:
        parser.error("--batch_size must be positive")
    audio = next(((p, k) for p in args.input.split(",") if (k := looks_like_audio(p.strip()))), None)
    if audio:
        print(f"error: {audio[0]} looks like a sound file ({audio[1]}), not AudioSet embeddings (TFRecords); "
              f"give sound files with --audio FILE to a model exported with python -m models.exporting --audio "
              f"(README, 'Your own audio')", file=sys.stderr)
        return 2
    import tensorflow as tf  # after parsing: --help does not wait for TensorFlow

    from evaluation import scoring
    from tfdata import datasets, readers

    try:
        if args.output and tf.io.gfile.isdir(args.output):
            raise IsADirectoryError(f"--output {args.output} is a directory; give a file name (.csv or .jsonl)")
        saved_model = scoring.resolve_saved_model(args.saved_model)
        names = scoring.class_names(saved_model)
        scored = scoring.score([saved_model], datasets.eval_files(args.input), args.batch_size,
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
    if args.output:  # under a temporary name, then renamed: a partial file never looks finished
        from tfdata import fileio

        try:
            fileio.write_atomically(args.output, csv_rows(rows, args.top_k) if args.output.endswith(".csv")
                                    else "".join(json.dumps(row) + "\n" for row in rows))
        except (OSError, tf.errors.OpError) as e:
            print(f"error: cannot write --output {args.output}: {readers.error_message(e)}", file=sys.stderr)
            return 1
    if scored.skipped:
        print(f"skipped invalid records: {scored.skipped}", file=sys.stderr)
    return 0


# --- Sound files (--audio) ----------------------------------------------------------------------------

def predict_audio(argv: list[str]) -> int:
    """The --audio path: sound files -> serve_waveform -> top classes, timeline CSV, heat map."""
    parser = argparse.ArgumentParser(description="Top classes and a per-second timeline of sound files.",
                                     allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    import tensorflow as tf  # after parsing: --help does not wait for TensorFlow

    from evaluation import scoring
    from tfdata import audio, readers

    try:
        saved_model = scoring.resolve_saved_model(args.saved_model)
        model = tf.saved_model.load(saved_model)
        names = scoring.class_names(saved_model)
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
    from tfdata import fileio

    f = io.StringIO()
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["file", "rank", "index", "name", "score"])
    for file, scores, _ in results:
        for rank, c in enumerate(_top(scores, k), start=1):
            writer.writerow([file, rank, int(c), names[c], f"{scores[c]:.6f}"])
    fileio.write_atomically(path, f.getvalue())


def _write_timeline_csv(path: str, results: list, names, k: int) -> None:
    from tfdata import audio, fileio

    step = audio.PARAMS.example_hop_seconds
    f = io.StringIO()
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(["file", "start_seconds", "end_seconds", "rank", "index", "name", "score"])
    for file, _, frame_scores in results:
        for t, scores in enumerate(frame_scores):
            for rank, c in enumerate(_top(scores, k), start=1):
                writer.writerow([file, f"{t * step:.2f}", f"{(t + 1) * step:.2f}", rank, int(c), names[c],
                                 f"{scores[c]:.6f}"])
    fileio.write_atomically(path, f.getvalue())


def plot_timelines(path: str, results: list, names, k: int) -> None:
    """One heat map per file: the k classes with the highest score in any example x seconds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tfdata import audio, fileio

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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    fileio.write_atomically(path, buffer.getvalue())


if __name__ == "__main__":
    sys.exit(main())
