"""What an evaluation writes and prints: metrics.json, per_class.csv, scores.npz, the plot, tables."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys

import numpy as np
import tensorflow as tf

from evaluation import plots
from evaluation.scoring import Scored
from models import metrics as metrics_lib
from tfdata import fileio


SCORES_FILE = "scores.npz"  # per clip: video_id, start_time_seconds, scores, labels


def check_output_dir(path: str) -> None:
    """Creates an output directory, or fails (before any work) when a file is in the way."""
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        raise NotADirectoryError(f"--output_dir {path} is a file, not a directory")
    try:
        tf.io.gfile.makedirs(path)
    except tf.errors.OpError as e:
        raise OSError(f"--output_dir {path}: cannot create it ({e.message})") from None


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
    fileio.write_atomically(os.path.join(output_dir, SCORES_FILE), buffer.getvalue())
    counts = train_counts if train_counts is not None else np.array([m.positives for m in result.per_class])
    plots.plot_per_class(os.path.join(output_dir, "per_class.png"), counts, result,
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


def _load_scores(result_dir: str) -> dict | None:
    path = os.path.join(result_dir, SCORES_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f, np.load(io.BytesIO(f.read())) as saved:
        return {k: saved[k] for k in ("video_id", "start_time_seconds", "scores", "labels")}


def paired_difference(result_dir: str, baseline_dir: str) -> tuple[float, float, float] | None:
    """mAP of one evaluate.py output minus another's, with the paired 95% bootstrap interval
    (models.metrics.bootstrap_difference, resampling in the first one's clip order), the baseline's clips matched
    by video id and start time; None when either has no scores.npz or they scored other clips (or the same clips
    with other labels)."""
    return _paired(_load_scores(result_dir), _load_scores(baseline_dir))


def _paired(run: dict | None, base: dict | None) -> tuple[float, float, float] | None:
    """paired_difference of two loaded scores.npz."""
    if run is None or base is None:
        return None
    keys = [list(zip(s["video_id"].tolist(), s["start_time_seconds"].tolist())) for s in (run, base)]
    position = {key: i for i, key in enumerate(keys[1])}
    if len(position) != len(keys[1]) or len(set(keys[0])) != len(keys[1]) or not all(k in position for k in keys[0]):
        return None
    order = np.array([position[k] for k in keys[0]])  # baseline row of each of run's clips
    if not np.array_equal(run["labels"], base["labels"][order]):
        return None
    return metrics_lib.bootstrap_difference(run["labels"], run["scores"], base["scores"][order])


def compare(result_dirs: list[str]) -> str:
    """A Markdown table of model, data, mAP, AUC, d-prime for several evaluate.py output directories, each
    run's mAP minus the first's with the paired 95% interval (where both scored the same clips), and a
    warning under it when they were measured on different data."""
    rows = ["| run | models | data | mAP | minus the first run's (paired 95% interval) | AUC | d-prime | clips |",
            "|---|---|---|---|---|---|---|---|"]
    measured_on, first = set(), None
    for i, d in enumerate(result_dirs):
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
        mAP, *others = ("n/a" if m[k] is None else f"{m[k]:.3f}" for k in ("mAP", "AUC", "d_prime"))
        if i == 0:
            first, versus = _load_scores(d), "—"  # loaded once for every comparison
        else:
            difference = _paired(_load_scores(d), first)
            versus = "n/a" if difference is None else "{:+.4f} ({:+.4f} to {:+.4f})".format(*difference)
        rows.append(f"| {d} | {models} | {data} | {mAP} | {versus} | {' | '.join(others)} | {m['num_clips']} |")
    if len(measured_on) > 1:
        rows.append("")
        rows.append("**warning: these results were measured on different data** (" + "; ".join(
            f"{data}: {clips} clips" for data, clips in sorted(measured_on)) + "): their metrics do not compare.")
    return "\n".join(rows) + "\n"


def print_table(result: metrics_lib.Metrics, names: tuple[str, ...], out=sys.stdout, rows: int = 5) -> None:
    print(f"mAP {result.mAP:.4f}   AUC {result.AUC:.4f}   d-prime {result.d_prime:.4f}   "
          f"({result.num_clips} clips, {result.num_classes_scored} classes scored, "
          f"{result.num_classes_left_out} without positives left out)", file=out)
    ranked = plots.ranked_classes(result)
    for title, chosen in (("best", ranked[:rows]), ("worst", ranked[-rows:])):
        print(f"{title} classes (of those with at least {plots.MIN_POSITIVES_TO_RANK} positives):", file=out)
        for m in chosen:
            print(f"  {m.index:3d} {names[m.index][:40]:40s} AP {m.ap:.3f}  AUC {m.auc if m.auc is not None else float('nan'):.3f}"
                  f"  ({m.positives} positives)", file=out)
