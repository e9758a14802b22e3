"""Scores AudioSet clips with exported SavedModels and writes metrics, tables and plots.

Scoring goes through the SavedModel's `serve_examples` signature, on the serialized records
themselves, so evaluation exercises exactly what is served. Several SavedModels average their
scores before the metrics (the research code's snapshot averaging).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time

import numpy as np
import tensorflow as tf

from models import metrics as metrics_lib
from tfdata import fileio, readers, schema

CLASS_LABELS_ASSET = "class_labels_indices.csv"
PROGRESS_SECONDS = 30  # a progress line this often when stderr is not a terminal
MIN_POSITIVES_TO_RANK = 5  # "best/worst classes" leave out classes with fewer positives (AP 1.0 on 1 clip)


class SavedModelError(ValueError):
    pass


def _check_saved_model(path: str) -> None:
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise SavedModelError(f"{path}: not a SavedModel (no saved_model.pb)")


def resolve_saved_model(path: str) -> str:
    """`path`, or `path`/saved_model when `path` is the model dir train.py wrote (the parent of its export)."""
    inner = os.path.join(path, "saved_model")
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")) and tf.io.gfile.exists(
            os.path.join(inner, "saved_model.pb")):
        print(f"{path} is a train.py model dir: using its export {inner}", file=sys.stderr)
        return inner
    return path


def check_output_dir(path: str) -> None:
    """Creates an output directory, or fails (before any work) when a file is in the way."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise NotADirectoryError(f"--output_dir {path} is a file, not a directory")
    try:
        tf.io.gfile.makedirs(path)
    except tf.errors.OpError as e:
        raise OSError(f"--output_dir {path}: cannot create it ({e.message})") from None


def load_saved_model(path: str):
    """tf.saved_model.load with a clear error when `path` is not an exported model of this project."""
    _check_saved_model(path)
    model = tf.saved_model.load(path)
    if "serve_examples" not in model.signatures:
        raise SavedModelError(f"{path}: SavedModel has no 'serve_examples' signature")
    return model


def class_names(saved_model_dir: str) -> tuple[str, ...]:
    """The display names exported with the model (its class_labels_indices.csv asset)."""
    _check_saved_model(saved_model_dir)
    return schema.read_class_labels(os.path.join(saved_model_dir, "assets", CLASS_LABELS_ASSET)).names


@dataclasses.dataclass
class Scored:
    video_id: np.ndarray  # bytes [N]
    start_time_seconds: np.ndarray  # float32 [N]
    labels: np.ndarray  # uint8 [N, 527]
    scores: np.ndarray  # float32 [N, 527], the mean over models
    skipped: dict[str, int]  # invalid records by reason


def score(saved_models: list[str], files: list[str], batch_size: int = 1024, progress=sys.stderr,
          any_length: bool = False) -> Scored:
    """Scores every valid clip of `files` once; `any_length` also accepts clips of more than 10 frames."""
    readers.check_tfrecord_files(files)  # before TensorFlow's reader, which trusts record lengths
    models = [load_saved_model(p).signatures["serve_examples"] for p in saved_models]
    accepted = [schema.REASON_CODES.index(schema.OK)] + (
        [schema.REASON_CODES.index("too_many_frames")] if any_length else [])
    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(batch_size)
    parts, skipped = [], np.zeros(len(schema.REASON_CODES), np.int64)
    start, done = time.monotonic(), 0
    terminal = progress is not None and progress.isatty()  # \r lines would run together in a log
    last = start
    try:
        for serialized in records.prefetch(2):
            _score_batch(serialized, models, accepted, parts, skipped)
            done += int(tf.size(serialized))
            now = time.monotonic()
            if progress and (terminal or now - last >= PROGRESS_SECONDS):
                line = f"scored {done} clips ({done / (now - start):.0f} clips/s)"
                print("\r" + line if terminal else line, end="" if terminal else "\n", file=progress, flush=True)
                last = now
    except tf.errors.DataLossError:
        raise ValueError(readers.find_data_loss(files)) from None
    if progress:
        seconds = time.monotonic() - start
        print("" if terminal else f"scored {done} records in {seconds:.0f} s ({done / max(seconds, 1e-9):.0f}/s)",
              file=progress)
    if not parts:
        raise ValueError(f"no valid clip in {len(files)} file(s) (skipped: {_named(skipped) or 'none'})")
    joined = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    return Scored(joined["video_id"], joined["start_time_seconds"], joined["labels"],
                  joined["scores"].astype(np.float32),
                  _named(skipped))


def _named(counts: np.ndarray) -> dict[str, int]:
    return {name: int(n) for name, n in zip(schema.REASON_CODES, counts) if n}


def _score_batch(serialized: tf.Tensor, models, accepted, parts, skipped) -> None:
    records = serialized.numpy()
    clips = readers.parse_records(records.tolist())  # marks records that are not SequenceExamples
    valid = np.isin(clips["reason"], accepted)
    skipped += np.bincount(clips["reason"][~valid], minlength=len(schema.REASON_CODES))
    if not valid.any():
        return
    examples = tf.constant(records[valid])
    scores = np.mean([m(examples=examples)["scores"].numpy() for m in models], axis=0)
    parts.append({key: clips[key][valid] for key in ("video_id", "start_time_seconds", "labels")} | {"scores": scores})


def write_results(output_dir: str, scored: Scored, result: metrics_lib.Metrics, names: tuple[str, ...],
                  saved_models: list[str], data: str, train_counts: np.ndarray | None,
                  map_interval: tuple[float, float] | None = None) -> None:
    tf.io.gfile.makedirs(output_dir)
    per_class = [{"index": m.index, "name": names[m.index], "positives": m.positives, "AP": m.ap, "AUC": m.auc}
                 for m in result.per_class]
    summary = {"mAP": result.mAP, "mAP_95_interval": list(map_interval) if map_interval else None,
               "AUC": result.AUC, "d_prime": result.d_prime, "num_clips": result.num_clips,
               "num_classes_scored": result.num_classes_scored, "num_classes_left_out": result.num_classes_left_out,
               "skipped_records": scored.skipped, "saved_models": saved_models, "data": data, "per_class": per_class}
    nulls = {}
    summary = _finite_or_null(summary, "", nulls)
    if nulls:
        summary["null_values"] = {key: f"{value} (undefined on this set: no class has both positive and negative "
                                       "clips, or an AUC of 0 or 1 makes d-prime infinite); written as null"
                                  for key, value in nulls.items()}
    # Every file is written under a temporary name and renamed: a reader finds it whole or not at all.
    fileio.write_atomically(os.path.join(output_dir, "metrics.json"), json.dumps(summary, indent=1, allow_nan=False))
    out = io.StringIO()
    writer = csv.DictWriter(out, ["index", "name", "positives", "AP", "AUC"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_class)
    fileio.write_atomically(os.path.join(output_dir, "per_class.csv"), out.getvalue())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, video_id=scored.video_id.astype(bytes), start_time_seconds=scored.start_time_seconds,
                        scores=scored.scores, labels=scored.labels)
    fileio.write_atomically(os.path.join(output_dir, "scores.npz"), buffer.getvalue())
    counts = train_counts if train_counts is not None else np.array([m.positives for m in result.per_class])
    plot_per_class(os.path.join(output_dir, "per_class.png"), counts, result,
                   "training clips" if train_counts is not None else "evaluation positives", names)


def _finite_or_null(value, key: str, nulls: dict):
    """A JSON-ready copy with NaN and infinities replaced by None (recorded in nulls by key path)."""
    if isinstance(value, float) and not math.isfinite(value):
        nulls[key] = repr(value)
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v, f"{key}.{k}" if key else k, nulls) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v, f"{key}[{i}]", nulls) for i, v in enumerate(value)]
    return value


PLOT_SIZE_INCHES, PLOT_DPI = (16, 10), 100
PLOT_NAMED = 10  # classes named at each end of the AP ranking
RUNNING_MEAN = 25  # classes in the running mean of AP against the clip count


def ranked_classes(result: metrics_lib.Metrics) -> list[metrics_lib.ClassMetrics]:
    """Scored classes with at least MIN_POSITIVES_TO_RANK positives, best AP first."""
    return sorted((m for m in result.per_class if m.ap is not None and m.positives >= MIN_POSITIVES_TO_RANK),
                  key=lambda m: -m.ap)


def plot_per_class(path: str, counts: np.ndarray, result: metrics_lib.Metrics, count_label: str,
                   names: tuple[str, ...] | None = None) -> None:
    """Two panels legible at 527 classes: AP of every class sorted by AP, the PLOT_NAMED best and worst
    named; and AP against the clip count (log scale) with a running mean over RUNNING_MEAN classes."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ap = np.array([m.ap if m.ap is not None else np.nan for m in result.per_class])  # [527]
    scored = np.flatnonzero(~np.isnan(ap))
    by_ap = scored[np.argsort(-ap[scored], kind="stable")]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
    top.bar(np.arange(len(by_ap)), ap[by_ap], width=1.0, color="#3182bd")
    top.axhline(result.mAP, color="C3", linewidth=1, label=f"mAP {result.mAP:.3f}")
    top.set_xlim(-1, len(by_ap))
    top.set_ylim(0, 1)
    top.set_xlabel(f"{len(by_ap)} classes, sorted by average precision")
    top.set_ylabel("average precision")
    top.legend(loc="upper right")
    if names is not None:
        ranked = [m.index for m in ranked_classes(result)]
        best, worst = ranked[:PLOT_NAMED], ranked[-PLOT_NAMED:][::-1]
        for title, chosen, x in (("best", best, 0.30), ("worst", worst, 0.62)):
            lines = [f"{title} (>= {MIN_POSITIVES_TO_RANK} positives):"] + [
                f"{ap[c]:.3f} {names[c][:34]}" for c in chosen]
            top.text(x, 0.97, "\n".join(lines), transform=top.transAxes, va="top", family="monospace", fontsize=8,
                     bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "#bbbbbb"})
    by_count = scored[np.argsort(counts[scored], kind="stable")]
    x = np.maximum(counts[by_count], 1)
    bottom.scatter(x, ap[by_count], s=6, color="#9ecae1", label="one class")
    if len(by_count) >= RUNNING_MEAN:
        window = np.ones(RUNNING_MEAN) / RUNNING_MEAN
        bottom.plot(x[RUNNING_MEAN // 2:][:len(by_count) - RUNNING_MEAN + 1],
                    np.convolve(ap[by_count], window, mode="valid"), color="C3",
                    label=f"running mean over {RUNNING_MEAN} classes")
    bottom.set_xscale("log")
    bottom.set_ylim(0, 1)
    bottom.set_xlabel(f"number of {count_label} (log scale)")
    bottom.set_ylabel("average precision")
    bottom.legend(loc="upper left")
    fig.suptitle(f"mAP {result.mAP:.3f}  AUC {result.AUC:.3f}  d' {result.d_prime:.3f}  "
                 f"({result.num_classes_scored} classes scored, {result.num_clips} clips)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    plt.close(fig)
    fileio.write_atomically(path, buffer.getvalue())


def compare(result_dirs: list[str]) -> str:
    """A Markdown table of model, data, mAP, AUC, d-prime for several evaluate.py output directories, with a
    warning under it when they were measured on different data."""
    rows = ["| run | models | data | mAP | AUC | d-prime | clips |", "|---|---|---|---|---|---|---|"]
    measured_on = set()
    for d in result_dirs:
        path = os.path.join(d, "metrics.json")
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{d}: no metrics.json (not an evaluate.py output directory)")
        try:
            with tf.io.gfile.GFile(path) as f:
                m = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}); run evaluate.py again for {d}") from None
        models = ", ".join(os.path.basename(os.path.dirname(p.rstrip("/"))) or p for p in m["saved_models"])
        data = m.get("data", "?")
        measured_on.add((data, m["num_clips"]))
        figures = " | ".join("n/a" if m[k] is None else f"{m[k]:.3f}" for k in ("mAP", "AUC", "d_prime"))
        rows.append(f"| {d} | {models} | {data} | {figures} | {m['num_clips']} |")
    if len(measured_on) > 1:
        rows.append("")
        rows.append("**warning: these results were measured on different data** (" + "; ".join(
            f"{data}: {clips} clips" for data, clips in sorted(measured_on)) + "): their metrics do not compare.")
    return "\n".join(rows) + "\n"


def print_table(result: metrics_lib.Metrics, names: tuple[str, ...], out=sys.stdout, rows: int = 5) -> None:
    print(f"mAP {result.mAP:.4f}   AUC {result.AUC:.4f}   d-prime {result.d_prime:.4f}   "
          f"({result.num_clips} clips, {result.num_classes_scored} classes scored, "
          f"{result.num_classes_left_out} without positives left out)", file=out)
    ranked = ranked_classes(result)
    for title, chosen in (("best", ranked[:rows]), ("worst", ranked[-rows:])):
        print(f"{title} classes (of those with at least {MIN_POSITIVES_TO_RANK} positives):", file=out)
        for m in chosen:
            print(f"  {m.index:3d} {names[m.index][:40]:40s} AP {m.ap:.3f}  AUC {m.auc if m.auc is not None else float('nan'):.3f}"
                  f"  ({m.positives} positives)", file=out)
