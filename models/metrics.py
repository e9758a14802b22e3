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


class WeightedMAP:
    """mAP of one set of scores under many clip weightings (a clip of weight k counts k times; equal
    scores form one threshold, as in sklearn): every class is sorted once, not once per weighting.

    labels 0/1 [N, C], scores [N, C]; ``self(weight [N])`` -> mAP over the classes with a weighted positive.
    """

    def __init__(self, labels: np.ndarray, scores: np.ndarray):
        labels = labels.astype(bool)
        n, num_classes = labels.shape
        self.order = np.argsort(-scores, axis=0, kind="stable").astype(np.int32)  # [N, C]: clips by descending score
        ranked = np.take_along_axis(scores, self.order, axis=0)  # [N, C]
        last = np.where(np.r_[ranked[1:] != ranked[:-1], np.ones([1, num_classes], bool)],
                        np.arange(n)[:, None], n)  # [N, C]: own rank at the last clip of a group of ties, else n
        group_end = np.minimum.accumulate(last[::-1], axis=0)[::-1]  # [N, C]: rank where each clip's group ends
        # The positives, class by class in rank order: P = all positive (clip, class) pairs.
        self.cls, rank = np.nonzero(np.take_along_axis(labels, self.order, axis=0).T)  # [P], [P]
        self.clip = self.order[rank, self.cls]  # [P]
        self.end = group_end[rank, self.cls]  # [P]
        self.first = np.searchsorted(self.cls, np.arange(num_classes + 1))  # [C + 1]: each class's first positive
        # For each positive, the last positive of its class ranked at or before its group's end.
        self.upto = np.concatenate([
            self.first[c] + np.searchsorted(rank[self.first[c]:self.first[c + 1]],
                                            self.end[self.first[c]:self.first[c + 1]], side="right") - 1
            for c in range(num_classes)]).astype(np.int64)  # [P]
        self.num_classes = num_classes

    def __call__(self, weight: np.ndarray) -> float:
        weight = np.asarray(weight, np.float32)
        seen = np.cumsum(weight[self.order], axis=0, dtype=np.float32)[self.end, self.cls]  # [P]: weight above threshold
        hits = weight[self.clip].astype(np.float64)  # [P]
        cumulative = np.cumsum(hits)  # [P]
        base = np.r_[0.0, cumulative][self.first[:-1]][self.cls]  # [P]: hits of the classes before
        precision = (cumulative[self.upto] - base) / np.maximum(seen, 1e-12)  # [P]
        total = np.bincount(self.cls, hits, self.num_classes)  # [C]
        scored = total > 0
        return float((np.bincount(self.cls, hits * precision, self.num_classes)[scored] / total[scored]).mean())


def bootstrap_map(labels: np.ndarray, scores: np.ndarray, resamples: int = 200, seed: int = 0,
                  level: float = 0.95) -> tuple[float, float]:
    """A 95% interval of mAP over clips: labels 0/1 [N, C], scores [N, C] -> (low, high).

    The normal bootstrap interval, mAP +- z * (the standard deviation of mAP over resamples of N clips
    drawn with replacement). Not the percentile interval: resampled AP is biased upward (a positive
    clip drawn twice ties with itself, so the copies raise each other's precision), by about 0.01 on
    eval_a, enough to put the percentile interval above the estimate. Classes without a positive in
    a resample are left out of its mean, as in :func:`compute`.
    """
    weighted = WeightedMAP(labels, scores)
    n = len(labels)
    rng = np.random.default_rng(seed)
    spread = np.std([weighted(np.bincount(rng.integers(0, n, n), minlength=n)) for _ in range(resamples)], ddof=1)
    estimate = weighted(np.ones(n))
    half = float(stats.norm.ppf(0.5 + level / 2) * spread)
    return estimate - half, estimate + half


def bootstrap_difference(labels: np.ndarray, scores: np.ndarray, baseline: np.ndarray, resamples: int = 200,
                         seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """mAP(scores) - mAP(baseline) on the same clips, with its paired 95% normal bootstrap interval (both
    scored on the same resamples, so the clips' shared difficulty cancels): labels 0/1 [N, C], scores and
    baseline [N, C] -> (difference, low, high)."""
    a, b = WeightedMAP(labels, scores), WeightedMAP(labels, baseline)
    n = len(labels)
    rng = np.random.default_rng(seed)
    weights = [np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)]
    spread = np.std([a(w) - b(w) for w in weights], ddof=1)
    difference = a(np.ones(n)) - b(np.ones(n))
    half = float(stats.norm.ppf(0.5 + level / 2) * spread)
    return difference, difference - half, difference + half
