"""Tests of octtl/training/clinical.py: what a run records of its operating points and calibration, by hand.

The validation and test predictions below are fixed; every expected number was worked out by hand (the working is
in the comments), none by the code under test.
"""

import numpy as np
import pytest

from octtl.errors import InputError
from octtl.training import calibration, clinical

# Validation: five fluid B-scans and five normal ones (octtl.training.metrics' test fixture).
P_VAL = np.array([0.95, 0.85, 0.70, 0.50, 0.40, 0.65, 0.50, 0.30, 0.20, 0.10])
Y_VAL = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
# Test: a normal B-scan sits exactly at 0.5, which the paper's rule (p > 0.5) calls normal.
P_TEST = np.array([0.90, 0.80, 0.60, 0.45, 0.35, 0.75, 0.55, 0.50, 0.15, 0.05])
Y_TEST = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
VENDORS = np.array(["cirrus"] * 4 + ["topcon"] * 6)

# Thresholds chosen on validation. Target 0.95: all five positives, so the lowest positive score, 0.40. Youden:
# J = 0.2, 0.4, 0.6 (0.70), 0.4 (0.65), 0.4 (0.50), 0.6 (0.40), ...: 0.70 and 0.40 tie, the higher is taken.
THRESHOLDS = {"0.5": 0.5, "target_sensitivity": 0.40, "youden": 0.70}
TEST_TABLES = {
    # p > 0.5: fluid 0.90 0.80 0.60 called, 0.45 0.35 missed; normal 0.75 0.55 flagged, 0.50 0.15 0.05 not.
    "0.5": dict(tp=3, fn=2, fp=2, tn=3, n=10, prevalence=0.5, sensitivity=0.6, specificity=0.6, ppv=3 / 5,
                npv=3 / 5, accuracy=0.6),
    # p >= 0.40: fluid 0.35 missed only; normal 0.75 0.55 0.50 flagged.
    "target_sensitivity": dict(tp=4, fn=1, fp=3, tn=2, n=10, prevalence=0.5, sensitivity=0.8, specificity=0.4,
                               ppv=4 / 7, npv=2 / 3, accuracy=0.6),
    # p >= 0.70: fluid 0.90 0.80 called; normal 0.75 flagged.
    "youden": dict(tp=2, fn=3, fp=1, tn=4, n=10, prevalence=0.5, sensitivity=0.4, specificity=0.8, ppv=2 / 3,
                   npv=4 / 7, accuracy=0.6),
}
# Brier: fluid (0.1² + 0.2² + 0.4² + 0.55² + 0.65²) = 0.935, normal (0.75² + 0.55² + 0.5² + 0.15² + 0.05²) = 1.14;
# 2.075 / 10. ECE over 10 equal-mass bins of 10 rows: one row a bin, so the mean |p - y| = (1.9 + 2.0) / 10.
TEST_BRIER, TEST_ECE = 0.2075, 0.39
# Validation: Brier (0.725 + 0.8125) / 10; ECE (1.6 + 1.75) / 10.
VAL_BRIER, VAL_ECE = 0.15375, 0.335


def test_operating_points_and_calibration_by_hand():
    record = clinical.record(P_VAL, Y_VAL, P_TEST, Y_TEST, 0.95, VENDORS)
    assert record["target_sensitivity"] == 0.95 and record["thresholds"] == pytest.approx(THRESHOLDS)
    assert record["threshold_rules"] == {"0.5": ">", "target_sensitivity": ">=", "youden": ">="}
    for name, expected in TEST_TABLES.items():
        assert record["operating_points"]["test"][name] == pytest.approx(expected), name
    # On validation too: at 0.5 the paper's rule leaves the normal 0.50 out and the fluid 0.50 as well.
    assert record["operating_points"]["validation"]["0.5"] == pytest.approx(dict(
        tp=3, fn=2, fp=1, tn=4, n=10, prevalence=0.5, sensitivity=0.6, specificity=0.8, ppv=0.75, npv=4 / 6,
        accuracy=0.7))
    scores = record["calibration"]
    assert scores["bins"] == clinical.CALIBRATION_BINS == 10
    assert (scores["test"]["brier"], scores["test"]["ece"]) == pytest.approx((TEST_BRIER, TEST_ECE))
    assert (scores["validation"]["brier"], scores["validation"]["ece"]) == pytest.approx((VAL_BRIER, VAL_ECE))
    temperature = calibration.fit_temperature(P_VAL, Y_VAL)
    assert record["temperature"] == temperature and not scores["temperature_at_bound"]
    scaled = calibration.apply_temperature(P_TEST, temperature)
    assert scores["test"]["ece_calibrated"] == pytest.approx(float(np.mean(np.abs(scaled - Y_TEST))))
    assert scores["test"]["brier_calibrated"] == pytest.approx(float(np.mean((scaled - Y_TEST) ** 2)))
    # Per vendor: cirrus holds the first four (all fluid: AUC undefined), topcon the rest.
    assert record["test_by_vendor"] == {
        "cirrus": {"n": 4, "prevalence": 1.0, "accuracy": 0.75, "auc": None},
        # fluid 0.35 against normal 0.75 0.55 0.50 0.15 0.05: above 2 of 5.
        "topcon": {"n": 6, "prevalence": 1 / 6, "accuracy": 3 / 6, "auc": pytest.approx(0.4)}}


def test_the_paper_rule_at_half_is_the_runs_accuracy():
    record = clinical.record(P_VAL, Y_VAL, P_TEST, Y_TEST)
    assert record["operating_points"]["test"]["0.5"]["accuracy"] == float(np.mean((P_TEST > 0.5) == Y_TEST))
    assert clinical.ABOVE_HALF > 0.5 and np.nextafter(clinical.ABOVE_HALF, 0) == 0.5  # no double between


def test_without_a_test_set_only_validation_is_recorded():
    record = clinical.record(P_VAL, Y_VAL, None, None)
    assert set(record["operating_points"]) == {"validation"} and set(record["calibration"]) == {
        "bins", "temperature_at_bound", "validation"}
    assert "test_by_vendor" not in record


def test_the_recorded_temperature_recovers_a_known_one():
    """Validation logits z, labels drawn with probability sigmoid(z), the network's scores sigmoid(2.5 z): an
    overconfident network whose fitted temperature is 2.5."""
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    labels = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    p = 1 / (1 + np.exp(-2.5 * z))
    record = clinical.record(p, labels, p[:100], labels[:100])
    assert record["temperature"] == pytest.approx(2.5, rel=0.05)
    assert record["calibration"]["validation"]["ece_calibrated"] < record["calibration"]["validation"]["ece"] / 3


@pytest.mark.parametrize("target", [0, -0.1, 1.5, float("nan")])
def test_a_target_sensitivity_outside_0_1_is_refused(target):
    with pytest.raises(InputError, match="--target_sensitivity"):
        clinical.check_target(target)

