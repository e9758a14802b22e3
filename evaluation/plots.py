"""The per-class plot of an evaluation: AP of every class, and AP against the number of clips."""

from __future__ import annotations

import io

import numpy as np

from models import metrics as metrics_lib
from tfdata import fileio

MIN_POSITIVES_TO_RANK = 5  # "best/worst classes" leave out classes with fewer positives (AP 1.0 on 1 clip)
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
