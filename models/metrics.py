"""AudioSet metrics as the research code defines them: per-class AP and ROC AUC, mAP, AUC, d-prime.

mAP and AUC are unweighted means over classes, computed over *all* clips (no top-k truncation).
A class without a positive clip has no AP or AUC and is left out of the means; so is a class
whose clips are all positive (no AUC). d-prime = sqrt(2) * Phi^-1(AUC).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats
from sklearn import metrics as skmetrics


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    index: int
    positives: int
    ap: float | None  # None when the class has no positive clip
    auc: float | None  # None when the class has no positive or no negative clip


@dataclasses.dataclass(frozen=True)
class Metrics:
    mAP: float
    AUC: float
    d_prime: float
    num_clips: int
    num_classes_scored: int  # classes in the mAP (at least one positive clip)
    num_classes_left_out: int
    per_class: tuple[ClassMetrics, ...]


def d_prime(auc: float) -> float:
    return math.sqrt(2.0) * float(stats.norm.ppf(auc))


def compute(labels: np.ndarray, scores: np.ndarray) -> Metrics:
    """labels 0/1 [N, C], scores float [N, C] -> Metrics."""
    if labels.shape != scores.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must both be [clips, classes]")
    if len(labels) == 0:
        raise ValueError("no clips to score")
    labels = labels.astype(bool)
    positives = labels.sum(axis=0)
    per_class = []
    for c in range(labels.shape[1]):
        has_pos, has_neg = positives[c] > 0, positives[c] < len(labels)
        ap = float(skmetrics.average_precision_score(labels[:, c], scores[:, c])) if has_pos else None
        auc = float(skmetrics.roc_auc_score(labels[:, c], scores[:, c])) if has_pos and has_neg else None
        per_class.append(ClassMetrics(c, int(positives[c]), ap, auc))
    aps = [m.ap for m in per_class if m.ap is not None]
    aucs = [m.auc for m in per_class if m.auc is not None]
    if not aps:
        raise ValueError("no class has a positive clip: nothing to score")
    mean_auc = float(np.mean(aucs)) if aucs else float("nan")
    return Metrics(
        mAP=float(np.mean(aps)), AUC=mean_auc, d_prime=d_prime(mean_auc) if aucs else float("nan"),
        num_clips=len(labels), num_classes_scored=len(aps), num_classes_left_out=labels.shape[1] - len(aps),
        per_class=tuple(per_class))
