import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from models import metrics


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    labels = (rng.random([300, 20]) < 0.1).astype(np.uint8)
    labels[:, 3] = 0  # a class without positives
    scores = np.clip(labels * 0.3 + rng.random([300, 20]) * 0.8, 0, 1)
    return labels, scores


def test_metrics_equal_an_independent_computation(data):
    labels, scores = data
    m = metrics.compute(labels, scores)
    scored = [c for c in range(20) if labels[:, c].any()]
    assert m.num_classes_scored == 19 and m.num_classes_left_out == 1
    assert m.mAP == pytest.approx(np.mean([average_precision_score(labels[:, c], scores[:, c]) for c in scored]), abs=1e-9)
    auc = np.mean([roc_auc_score(labels[:, c], scores[:, c]) for c in scored])
    assert m.AUC == pytest.approx(auc, abs=1e-9)
    assert m.d_prime == pytest.approx(math.sqrt(2) * stats.norm.ppf(auc), abs=1e-9)
    assert m.per_class[3].ap is None and m.per_class[3].positives == 0
    assert m.num_clips == 300


def test_perfect_scores_give_one(data):
    labels, _ = data
    m = metrics.compute(labels, labels.astype(float))
    assert m.mAP == 1.0 and m.AUC == 1.0 and math.isinf(m.d_prime)


def test_chance_scores_give_auc_near_half(data):
    labels, _ = data
    m = metrics.compute(labels, np.random.default_rng(1).random(labels.shape))
    assert abs(m.AUC - 0.5) < 0.06 and abs(m.d_prime) < 0.25


def test_class_with_only_positives_has_ap_but_no_auc():
    labels = np.array([[1, 0], [1, 1], [1, 0]])
    m = metrics.compute(labels, np.array([[0.2, 0.1], [0.9, 0.8], [0.5, 0.3]]))
    assert m.per_class[0].ap == 1.0 and m.per_class[0].auc is None
    assert m.AUC == 1.0


def test_shape_mismatch_and_empty_input_are_refused():
    with pytest.raises(ValueError, match="must both be"):
        metrics.compute(np.zeros([3, 2]), np.zeros([3, 3]))
    with pytest.raises(ValueError, match="no class has a positive"):
        metrics.compute(np.zeros([3, 2]), np.zeros([3, 2]))
    for bad in (np.nan, np.inf):  # a NaN would sort anywhere and give a plausible-looking AP
        with pytest.raises(ValueError, match="scores contain NaN or infinity"):
            metrics.compute(np.eye(3), np.where(np.eye(3) > 0, bad, 0.5))


def test_weighted_map_equals_sklearn_with_sample_weights_and_ties():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(3)
    labels = rng.random([400, 12]) < 0.1
    labels[:, 5] = False  # a class without positives is left out
    scores = np.round(rng.random([400, 12]) + 0.4 * labels, 1)  # coarse scores: many ties
    weighted = metrics.WeightedMAP(labels, scores)
    assert weighted(np.ones(400)) == pytest.approx(metrics.compute(labels, scores).mAP, abs=1e-6)
    for _ in range(3):
        weight = rng.integers(0, 3, 400)
        expected = np.mean([average_precision_score(labels[:, c], scores[:, c], sample_weight=weight)
                            for c in range(12) if (weight * labels[:, c]).sum() > 0])
        assert weighted(weight) == pytest.approx(expected, abs=1e-6)


def test_bootstrap_interval_is_centred_calibrated_and_narrows_with_more_clips():
    """The interval's width matches the spread of mAP over independent draws of the same kind of data."""
    rng = np.random.default_rng(4)

    def draw(n):
        labels = rng.random([n, 20]) < 0.05
        return labels, rng.random([n, 20]) + 0.6 * labels

    labels, scores = draw(600)
    estimate = metrics.compute(labels, scores).mAP
    low, high = metrics.bootstrap_map(labels, scores, resamples=200)
    assert (low + high) / 2 == pytest.approx(estimate, abs=1e-6)
    independent = np.std([metrics.compute(*draw(600)).mAP for _ in range(40)], ddof=1)
    assert 0.6 < (high - low) / (2 * 1.96 * independent) < 1.6
    big_low, big_high = metrics.bootstrap_map(*draw(6000), resamples=100)
    assert 0 < big_high - big_low < (high - low) / 2  # ~1/sqrt(10) as wide


def test_paired_difference_is_exact_and_narrower_than_the_two_intervals():
    """A small real gain on the same clips: the paired interval excludes 0 where the separate ones overlap."""
    rng = np.random.default_rng(7)
    labels = rng.random([800, 20]) < 0.05
    noise = rng.random([800, 20])
    baseline = noise + 0.5 * labels
    better = noise + 0.53 * labels  # the same clips' scores, the positives lifted a little more
    difference, low, high = metrics.bootstrap_difference(labels, better, baseline, resamples=200)
    assert difference == pytest.approx(metrics.compute(labels, better).mAP - metrics.compute(labels, baseline).mAP,
                                       abs=1e-6)
    assert low < difference < high and (low + high) / 2 == pytest.approx(difference, abs=1e-9)
    assert low > 0, (low, high)
    separate_low, _ = metrics.bootstrap_map(labels, better, resamples=200)
    _, baseline_high = metrics.bootstrap_map(labels, baseline, resamples=200)
    assert separate_low < baseline_high  # the separate intervals overlap: they could not tell
    assert metrics.bootstrap_difference(labels, baseline, baseline, resamples=20) == (0.0, 0.0, 0.0)
