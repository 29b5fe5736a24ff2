"""What a run records for a clinical reader: operating points, calibration, its temperature, scores per vendor.

Accuracy and AUC say how well a network ranks B-scans; a clinician also asks how many fluid B-scans it misses and
how many normal ones it flags at the threshold in use, and whether its 0.9 means fluid nine times in ten (issue
#24). Everything here is chosen on the validation predictions of the run's chosen checkpoint and judged on its
test predictions, which neither trained nor chose anything:
  * three thresholds (octtl.training.metrics.operating_points): 0.5, the one that reaches `target_sensitivity` on
    validation, and Youden's J there; each with its two-by-two table on validation and on test. A threshold
    chosen from the scores calls p_fluid >= threshold (scikit-learn's rule: a threshold read off a ROC curve
    reproduces its point); the fixed 0.5 calls p_fluid > 0.5, the paper's rule, so its accuracy is the run's
    best_accuracy and test_accuracy exactly (a network whose softmax saturates or collapses scores exactly 0.5
    more often than one would think; `RULES`);
  * Brier score and expected calibration error over CALIBRATION_BINS equal-mass bins
    (octtl.training.calibration), before and after temperature scaling, with the temperature fitted on
    validation (Guo et al. 2017);
  * the test set's accuracy (the paper's rule) and AUC per vendor, for the leave-one-vendor-out comparison.

Pure functions over numbers (no TensorFlow); every value is a plain float, int, str or None, so the dict goes
into result.json as it is.
"""

import math
from typing import Optional, Sequence

import numpy as np

from octtl.errors import InputError
from octtl.training import calibration, metrics

# Equal-mass bins of the ECE (stated in result.json and on the report); a fold of 20 to 100 B-scans puts 2 to 10
# in each.
CALIBRATION_BINS = 10
# The recorded thresholds, in the order the report and predict show them (metrics.operating_points' names).
THRESHOLDS = ("0.5", "target_sensitivity", "youden")
TARGET_SENSITIVITY = 0.95  # --target_sensitivity's default
# How each threshold t calls a B-scan fluid: the paper's p > 0.5, and p >= t for the thresholds chosen on scores.
RULES = {"0.5": ">", "target_sensitivity": ">=", "youden": ">="}
# The smallest double above 0.5: p >= it exactly when p > 0.5, so two_by_two gives the paper's rule at 0.5.
ABOVE_HALF = float(np.nextafter(0.5, 1.0))


def check_target(target: float):
    """Refuses, naming the flag, a target sensitivity outside (0, 1]."""
    if not (isinstance(target, (int, float)) and 0 < target <= 1):
        raise InputError(f"--target_sensitivity={target}: must be in (0, 1] (a share of fluid B-scans to find)")


def calibration_scores(p, labels, temperature: Optional[float], bins: int = CALIBRATION_BINS) -> dict:
    """Brier score and ECE of binary p_fluid, and both again after `temperature` (when given); None without rows."""
    p, labels = metrics.check_binary(p, labels)
    out = {"n": int(len(p)), "brier": calibration.brier(p, labels), "ece": calibration.ece(p, labels, bins)}
    if temperature is not None and len(p):
        scaled = calibration.apply_temperature(p, temperature)
        out.update(brier_calibrated=calibration.brier(scaled, labels),
                   ece_calibrated=calibration.ece(scaled, labels, bins))
    return out


def by_vendor(p, labels, vendors) -> dict:
    """{vendor: n, prevalence, accuracy (p_fluid > 0.5, the paper's rule), auc (None with one class)}, sorted."""
    p, labels = metrics.check_binary(p, labels)
    vendors = np.asarray(vendors, dtype=object)
    out = {}
    for vendor in sorted(set(vendors.tolist())):
        mine = vendors == vendor
        yours, theirs = p[mine], labels[mine]
        called = metrics.predicted_classes(np.stack([1 - yours, yours], axis=1))
        out[str(vendor)] = {"n": int(mine.sum()), "prevalence": float(theirs.mean()),
                            "accuracy": float(np.mean(called == theirs)), "auc": metrics.auc(yours, theirs)}
    return out


def record(val_p, val_labels, test_p=None, test_labels=None, target_sensitivity: float = TARGET_SENSITIVITY,
           test_vendors: Optional[Sequence[str]] = None, bins: int = CALIBRATION_BINS) -> dict:
    """result.json's operating points, calibration and temperature of one run (and its test scores per vendor).

    Args:
        val_p, val_labels: the chosen checkpoint's p_fluid on the validation set, and its labels.
        test_p, test_labels: the same on the held-out test set; None without one (then only validation tables).
        target_sensitivity: the sensitivity the `target_sensitivity` threshold must reach on validation.
        test_vendors: the vendor of each test row, for `test_by_vendor`.
        bins: equal-mass bins of the ECE.

    Returns:
        {"target_sensitivity", "thresholds": {name: float or None}, "threshold_rules": RULES,
         "operating_points": {"validation": {name: two_by_two or None}[, "test": ...]},
         "temperature": float, "calibration": {"bins", "temperature_at_bound", "validation": calibration_scores
         [, "test": ...]}[, "test_by_vendor": by_vendor]}.
    """
    check_target(target_sensitivity)
    tested = test_p is not None and len(test_p) > 0
    empty = np.zeros(0)
    points = metrics.operating_points(val_p, val_labels, test_p if tested else empty,
                                      test_labels if tested else empty.astype(int), target_sensitivity)
    for side, (p, labels) in (("validation", (val_p, val_labels)), ("test", (test_p, test_labels))):
        if side == "validation" or tested:
            points[side]["0.5"] = metrics.two_by_two(p, labels, ABOVE_HALF)  # the paper's p > 0.5
    temperature = calibration.fit_temperature(val_p, val_labels)
    at_bound = bool(math.isclose(temperature, calibration.T_MIN, rel_tol=1e-3)
                    or math.isclose(temperature, calibration.T_MAX, rel_tol=1e-3))
    out = {"target_sensitivity": points["target_sensitivity"], "thresholds": points["thresholds"],
           "threshold_rules": dict(RULES),
           "operating_points": {"validation": points["validation"], **({"test": points["test"]} if tested else {})},
           "temperature": temperature,
           "calibration": {"bins": int(bins), "temperature_at_bound": at_bound,
                           "validation": calibration_scores(val_p, val_labels, temperature, bins)}}
    if tested:
        out["calibration"]["test"] = calibration_scores(test_p, test_labels, temperature, bins)
        if test_vendors is not None:
            out["test_by_vendor"] = by_vendor(test_p, test_labels, test_vendors)
    return out
