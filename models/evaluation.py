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
import os
import sys
import time

import numpy as np
import tensorflow as tf

from models import metrics as metrics_lib
from tfdata import readers, schema

CLASS_LABELS_ASSET = "class_labels_indices.csv"


class SavedModelError(ValueError):
    pass


def _check_saved_model(path: str) -> None:
    if not tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        raise SavedModelError(f"{path}: not a SavedModel (no saved_model.pb)")


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
    models = [load_saved_model(p).signatures["serve_examples"] for p in saved_models]
    accepted = [schema.REASON_CODES.index(schema.OK)] + (
        [schema.REASON_CODES.index("too_many_frames")] if any_length else [])
    records = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE).batch(batch_size)
    parts, skipped = [], np.zeros(len(schema.REASON_CODES), np.int64)
    start, done = time.monotonic(), 0
    try:
        for serialized in records.prefetch(2):
            _score_batch(serialized, models, accepted, parts, skipped)
            done += int(tf.size(serialized))
            if progress:
                print(f"\rscored {done} clips ({done / (time.monotonic() - start):.0f} clips/s)", end="", file=progress)
    except tf.errors.DataLossError:
        raise ValueError(readers.find_data_loss(files)) from None
    if progress:
        print(file=progress)
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
    with tf.io.gfile.GFile(os.path.join(output_dir, "metrics.json"), "w") as f:
        json.dump(summary, f, indent=1)
    out = io.StringIO()
    writer = csv.DictWriter(out, ["index", "name", "positives", "AP", "AUC"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_class)
    with tf.io.gfile.GFile(os.path.join(output_dir, "per_class.csv"), "w") as f:
        f.write(out.getvalue())
    buffer = io.BytesIO()
    np.savez_compressed(buffer, video_id=scored.video_id.astype(bytes), start_time_seconds=scored.start_time_seconds,
                        scores=scored.scores, labels=scored.labels)
    with tf.io.gfile.GFile(os.path.join(output_dir, "scores.npz"), "wb") as f:
        f.write(buffer.getvalue())
    counts = train_counts if train_counts is not None else np.array([m.positives for m in result.per_class])
    plot_per_class(os.path.join(output_dir, "per_class.png"), counts, result,
                   "training clips" if train_counts is not None else "evaluation positives")


PLOT_SIZE_INCHES, PLOT_DPI = (16, 6), 100


def plot_per_class(path: str, counts: np.ndarray, result: metrics_lib.Metrics, count_label: str) -> None:
    """Classes sorted by clip count: bars for the counts, stems for per-class AP (the research README's figure)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    order = np.argsort(-counts, kind="stable")  # [527]
    ap = np.array([result.per_class[c].ap if result.per_class[c].ap is not None else np.nan for c in order])
    fig, left = plt.subplots(figsize=PLOT_SIZE_INCHES, dpi=PLOT_DPI)
    x = np.arange(len(order))
    left.bar(x, np.maximum(counts[order], 1), width=1.0, color="#9ecae1", label=count_label)
    left.set_yscale("log")
    left.set_ylabel(f"number of {count_label}")
    left.set_xlabel("classes, sorted by number of " + count_label)
    left.set_xlim(-1, len(order))
    right = left.twinx()
    scored = ~np.isnan(ap)
    right.stem(x[scored], ap[scored], linefmt="C3-", markerfmt="C3.", basefmt=" ", label="average precision")
    right.set_ylim(0, 1)
    right.set_ylabel("average precision")
    left.set_title(f"mAP {result.mAP:.3f}  AUC {result.AUC:.3f}  d' {result.d_prime:.3f}  "
                   f"({result.num_classes_scored} classes scored, {result.num_clips} clips)")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI)
    plt.close(fig)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def compare(result_dirs: list[str]) -> str:
    """A Markdown table of model, mAP, AUC, d-prime for several evaluate.py output directories."""
    rows = ["| run | models | mAP | AUC | d-prime | clips |", "|---|---|---|---|---|---|"]
    for d in result_dirs:
        path = os.path.join(d, "metrics.json")
        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{d}: no metrics.json (not an evaluate.py output directory)")
        with tf.io.gfile.GFile(path) as f:
            m = json.load(f)
        models = ", ".join(os.path.basename(os.path.dirname(p.rstrip("/"))) or p for p in m["saved_models"])
        rows.append(f"| {d} | {models} | {m['mAP']:.3f} | {m['AUC']:.3f} | {m['d_prime']:.3f} | {m['num_clips']} |")
    return "\n".join(rows) + "\n"


def print_table(result: metrics_lib.Metrics, names: tuple[str, ...], out=sys.stdout, rows: int = 5) -> None:
    print(f"mAP {result.mAP:.4f}   AUC {result.AUC:.4f}   d-prime {result.d_prime:.4f}   "
          f"({result.num_clips} clips, {result.num_classes_scored} classes scored, "
          f"{result.num_classes_left_out} without positives left out)", file=out)
    scored = sorted((m for m in result.per_class if m.ap is not None), key=lambda m: -m.ap)
    for title, chosen in (("best", scored[:rows]), ("worst", scored[-rows:])):
        print(f"{title} classes:", file=out)
        for m in chosen:
            print(f"  {m.index:3d} {names[m.index][:40]:40s} AP {m.ap:.3f}  AUC {m.auc if m.auc is not None else float('nan'):.3f}"
                  f"  ({m.positives} positives)", file=out)
