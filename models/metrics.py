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
    """labels 0/1 [N, C], scores float [N, C] -> Metrics (equal to sklearn's average_precision_score and
    roc_auc_score class by class, computed for all classes at once)."""
    if labels.shape != scores.shape or labels.ndim != 2:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must both be [clips, classes]")
    if len(labels) == 0:
        raise ValueError("no clips to score")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    labels = labels.astype(bool)
    positives = labels.sum(axis=0)  # [C]
    ap = WeightedMAP(labels, scores).per_class(np.ones(len(labels)))  # [C], NaN without a positive
    auc = roc_auc(labels, scores)  # [C], NaN without a positive or a negative
    per_class = tuple(ClassMetrics(c, int(positives[c]), None if np.isnan(ap[c]) else float(ap[c]),
                                   None if np.isnan(auc[c]) else float(auc[c])) for c in range(labels.shape[1]))
    if np.isnan(ap).all():
        raise ValueError("no class has a positive clip: nothing to score")
    scored_auc = auc[~np.isnan(auc)]
    mean_auc = float(scored_auc.mean()) if len(scored_auc) else float("nan")
    return Metrics(
        mAP=float(np.nanmean(ap)), AUC=mean_auc, d_prime=d_prime(mean_auc) if len(scored_auc) else float("nan"),
        num_clips=len(labels), num_classes_scored=int((~np.isnan(ap)).sum()),
        num_classes_left_out=int(np.isnan(ap).sum()), per_class=per_class)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each class: labels bool [N, C], scores [N, C] -> [C], NaN for a class without a positive
    or a negative clip. The Mann-Whitney statistic with tied scores ranked as their mean rank, which is
    sklearn's roc_auc_score (the trapezoidal area)."""
    ranks = stats.rankdata(scores, axis=0)  # [N, C], 1-based, ties averaged
    pos = labels.sum(axis=0).astype(np.float64)  # [C]
    neg = len(labels) - pos  # [C]
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=0)  # [C]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((pos > 0) & (neg > 0), (rank_sum - pos * (pos + 1) / 2) / (pos * neg), np.nan)


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
        ap = self.per_class(weight)  # [C]
        return float(ap[~np.isnan(ap)].mean())

    def per_class(self, weight: np.ndarray) -> np.ndarray:
        """Each class's AP under the weighting [N] -> [C], NaN for a class without a weighted positive."""
        weight = np.asarray(weight, np.float32)
        seen = np.cumsum(weight[self.order], axis=0, dtype=np.float32)[self.end, self.cls]  # [P]: weight above threshold
        hits = weight[self.clip].astype(np.float64)  # [P]
        cumulative = np.cumsum(hits)  # [P]
        base = np.r_[0.0, cumulative][self.first[:-1]][self.cls]  # [P]: hits of the classes before
        precision = (cumulative[self.upto] - base) / np.maximum(seen, 1e-12)  # [P]
        total = np.bincount(self.cls, hits, self.num_classes)  # [C]
        return np.bincount(self.cls, hits * precision, self.num_classes) / np.where(total > 0, total, np.nan)


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
