"""Tests of octtl/training/calibration.py: hand-computed values on small fixed inputs, and properties.

Every expected number below was worked out by hand from the fixture next to it (the working is in the comments);
the temperature fits are checked against temperatures known by construction.
"""

import numpy as np
import pytest

from octtl.training import calibration


def test_brier_binary_and_k_class_by_hand():
    # (0.1-0)^2 + (0.4-0)^2 + (0.35-1)^2 + (0.8-1)^2 = 0.01 + 0.16 + 0.4225 + 0.04 = 0.6325, over 4.
    assert calibration.brier([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.158125)
    # Row 1 (class 0): 0.09 + 0.04 + 0.01 = 0.14; row 2 (class 1): 0.01 + 0.49 + 0.36 = 0.86; mean 0.5.
    assert calibration.brier([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], [0, 1]) == pytest.approx(0.5)
    # A two-class softmax counts the error in both columns: twice the binary score.
    rows = [[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]]
    assert calibration.brier(rows, [0, 0, 1, 1]) == pytest.approx(2 * 0.158125)
    assert calibration.brier([], []) is None


# Ten binary scores, given out of order; sorted they are 0.05 0.1 0.2 0.3 | 0.4 0.6 0.7 | 0.8 0.9 0.95 in three
# equal-mass bins of 4, 3, 3, with labels 0 0 1 0 | 0 1 1 | 1 1 1.
ECE_P = np.array([0.7, 0.05, 0.95, 0.3, 0.4, 0.1, 0.9, 0.2, 0.6, 0.8])
ECE_Y = np.array([1, 0, 1, 0, 0, 0, 1, 1, 1, 1])


def test_reliability_bins_by_hand():
    table = calibration.reliability(ECE_P, ECE_Y, bins=3)
    assert table["count"] == [4, 3, 3]
    assert table["mean_predicted"] == pytest.approx([0.65 / 4, 1.7 / 3, 2.65 / 3])
    assert table["observed"] == pytest.approx([0.25, 2 / 3, 1.0])


def test_ece_binary_by_hand():
    # Gaps 0.25 - 0.1625 = 0.0875, 2/3 - 1.7/3 = 0.1, 1 - 2.65/3 = 0.35/3; weighted 0.4, 0.3, 0.3.
    assert calibration.ece(ECE_P, ECE_Y, bins=3) == pytest.approx(0.4 * 0.0875 + 0.3 * 0.1 + 0.3 * 0.35 / 3)
    assert calibration.ece(ECE_P, ECE_Y, bins=3) == pytest.approx(0.1)


def test_ece_k_class_uses_the_predicted_class_confidence():
    rows = [[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.05, 0.9, 0.05]]
    labels = [0, 2, 2, 0]
    # Confidence / right: 0.6 yes, 0.5 no, 0.8 yes, 0.9 no. Bins (0.5, 0.6) and (0.8, 0.9): mean 0.55 vs 0.5,
    # mean 0.85 vs 0.5; ECE = 0.5 * 0.05 + 0.5 * 0.35.
    assert calibration.ece(rows, labels, bins=2) == pytest.approx(0.2)
    assert calibration.reliability(rows, labels, bins=2)["observed"] == [0.5, 0.5]


def test_ece_extremes_and_equal_mass():
    rng = np.random.default_rng(1)
    p = rng.random(103)
    y = rng.integers(0, 2, 103)
    assert calibration.ece(p, y, bins=1) == pytest.approx(abs(y.mean() - p.mean()))
    assert calibration.ece(p, y, bins=103) == pytest.approx(np.mean(np.abs(y - p)))
    counts = calibration.reliability(p, y, bins=10)["count"]
    assert sum(counts) == 103 and max(counts) - min(counts) <= 1
    # Fewer rows than bins: one row per bin, no empty bins.
    assert calibration.reliability([0.3, 0.7], [0, 1], bins=10)["count"] == [1, 1]
    assert calibration.ece([], [], bins=10) is None
    # Labels drawn with the scores' own probabilities: well calibrated, small ECE.
    p = rng.random(20000)
    assert calibration.ece(p, (rng.random(20000) < p).astype(int)) < 0.02


def test_apply_temperature_by_hand():
    # softmax(log p / 2) = sqrt(p) renormalised: sqrt(0.8) / (sqrt(0.8) + sqrt(0.2)) = 2 / 3.
    assert calibration.apply_temperature(np.array([0.8]), 2.0) == pytest.approx([2 / 3])
    # T = 0.5 squares: 0.25, 0.0625, 0.0625 over 0.375.
    assert calibration.apply_temperature([[0.5, 0.25, 0.25]], 0.5)[0] == pytest.approx([2 / 3, 1 / 6, 1 / 6])
    with pytest.raises(ValueError):
        calibration.apply_temperature([[0.5, 0.5]], 0.0)


def test_temperature_one_leaves_probabilities_unchanged_and_argmax_never_moves():
    rng = np.random.default_rng(2)
    rows = rng.dirichlet(np.ones(4), 50)
    assert calibration.apply_temperature(rows, 1.0) == pytest.approx(rows, rel=1e-12, abs=1e-15)
    for t in (0.3, 2.5):
        assert np.array_equal(np.argmax(calibration.apply_temperature(rows, t), axis=1), np.argmax(rows, axis=1))
    p = rng.random(30)
    assert calibration.apply_temperature(p, 1.0) == pytest.approx(p, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("q, fraction, expected", [
    # Every row says p = q while a `fraction` of labels are 1: the best calibrated value is the fraction, so
    # logit(q) / T = logit(fraction): 0.9 -> 0.75 is log 9 / log 3 = 2; 0.75 -> 0.9 is 1/2.
    (0.9, 0.75, 2.0), (0.75, 0.9, 0.5)])
def test_fit_temperature_by_hand(q, fraction, expected):
    labels = np.array([1] * round(20 * fraction) + [0] * round(20 * (1 - fraction)))
    assert calibration.fit_temperature(np.full(20, q), labels) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("true_t, classes", [(2.5, 3), (0.6, 3), (2.5, 2), (0.6, 2)])
def test_fit_temperature_recovers_a_known_temperature(true_t, classes):
    rng = np.random.default_rng(11)
    n = 40000
    logits = rng.normal(0, 2.0, (n, classes))
    calibrated = np.exp(logits / true_t) / np.exp(logits / true_t).sum(axis=1, keepdims=True)
    labels = (rng.random((n, 1)) > np.cumsum(calibrated, axis=1)).sum(axis=1)  # one draw per row
    outputs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)  # what the network saved
    fitted = calibration.fit_temperature(outputs.astype(np.float32), labels)
    assert fitted == pytest.approx(true_t, rel=0.04)
    if classes == 2:  # the binary column alone gives the same fit
        assert calibration.fit_temperature(outputs[:, 1], labels) == pytest.approx(fitted, rel=1e-4)


def test_fit_temperature_lowers_the_nll():
    rng = np.random.default_rng(4)
    rows = rng.dirichlet(np.full(3, 0.3), 500)
    labels = rng.integers(0, 3, 500)  # unrelated to the rows: the network is overconfident, T > 1
    t = calibration.fit_temperature(rows, labels)

    def nll(r):
        return -np.mean(np.log(r[np.arange(500), labels]))
    assert t > 1 and nll(calibration.apply_temperature(rows, t)) < nll(rows)
