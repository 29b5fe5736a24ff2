"""Scores beyond the paper's accuracy and AUC: operating points, patient-level intervals, K classes, fluid types.

What the coming issues report, as pure functions over numbers (numpy, scikit-learn, scipy; no TensorFlow):
  * operating points (issue #24, STARD): the two-by-two table at a threshold, and thresholds chosen on
    validation (0.5, a target sensitivity, Youden's J) applied to test;
  * intervals (issue #24): a bootstrap that resamples whole volumes or patients, since B-scans of one volume
    are not independent;
  * K classes (issue #23): accuracy, one-vs-rest AUC, confusion matrix and cross-entropy of softmax outputs;
  * fluid types (issue #23): IRF, SRF and PED scored per B-scan and per volume as RETOUCH did (Bogunovic et al.
    2019, IEEE TMI 38(8):1858-1874).

Threshold rule: a score p is positive iff p >= threshold, scikit-learn's roc_curve convention, so a threshold
read off a ROC curve reproduces that curve's point. The paper's accuracy calls a B-scan fluid when p_fluid > 0.5;
the two agree except for a score of exactly 0.5. Returned dicts hold plain floats, ints and None (undefined: a
zero denominator, one class missing), never NaN, so they go into JSON as they are. Calibration is in
`octtl.training.calibration`.
"""

import math
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats
from sklearn import metrics as sk_metrics

from octtl.data.volumes import FLUID_CODES

# Keras' backend epsilon (keras.backend.epsilon()), which early_stop.evaluate_probabilities and model.evaluate
# clip probabilities to; written out here so that this module imports no Keras.
EPSILON = 1e-7
# The three fluid-type outputs, in this column order: RETOUCH's codes 1, 2, 3.
FLUID_TYPES = tuple(FLUID_CODES)


def check_binary(p, labels) -> Tuple[np.ndarray, np.ndarray]:
    """Binary scores (n,) as float64 and their 0/1 labels as int64; ValueError for any other shape or label."""
    p = np.asarray(p, np.float64)
    labels = np.asarray(labels)
    if p.ndim != 1 or labels.shape != p.shape:
        raise ValueError(f"scores and labels must be 1-D of one length, got {p.shape} and {labels.shape}")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return p, labels.astype(np.int64)


def check_classes(probabilities, labels, k: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, K) as float64 and integer labels 0..K-1 as int64 (K = `k` when given); else ValueError."""
    probabilities = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(f"probabilities must be (n, K) with one label per row, got {probabilities.shape} "
                         f"and {labels.shape}")
    k = probabilities.shape[1] if k is None else k
    if probabilities.shape[1] != k:
        raise ValueError(f"{k} classes named but probabilities have {probabilities.shape[1]} columns")
    if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must be integers in 0..{k - 1}")
    return probabilities, labels.astype(np.int64)


def _ratio(numerator: int, denominator: int) -> Optional[float]:
    return numerator / denominator if denominator else None


def auc(p, labels) -> Optional[float]:
    """ROC AUC of binary scores against 0/1 labels; None when one class is missing (undefined, not 0.5).

    As the Mann-Whitney statistic over average ranks (ties count one half), which is the area under the ROC curve
    scikit-learn's roc_auc_score integrates, to rounding; the bootstraps call this thousands of times, and
    roc_auc_score's input checks cost milliseconds a call.
    """
    p, labels = check_binary(p, labels)
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    ranks = scipy_stats.rankdata(p)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


# --- Operating points ---------------------------------------------------------------------------------------

def two_by_two(p, labels, threshold: float) -> dict:
    """The two-by-two table of binary scores at a threshold, and the rates STARD asks for.

    Positive iff p >= threshold (scikit-learn's roc_curve convention: a threshold taken from the ROC reproduces
    its point; the paper's p > 0.5 differs only for a score of exactly 0.5).

    Returns:
        tp, fp, tn, fn, n (ints); prevalence, sensitivity, specificity, ppv, npv, accuracy (floats, None where
        their denominator is 0).
    """
    p, labels = check_binary(p, labels)
    called = p >= threshold
    tp, fp = int(np.sum(called & (labels == 1))), int(np.sum(called & (labels == 0)))
    fn, tn = int(np.sum(~called & (labels == 1))), int(np.sum(~called & (labels == 0)))
    n = len(labels)
    return {"tp": tp, "fp": fp, "tn": tn, "fn": fn, "n": n, "prevalence": _ratio(tp + fn, n),
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "accuracy": _ratio(tp + tn, n)}


def _at_or_above(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the ascending `sorted_scores` are >= each threshold."""
    return len(sorted_scores) - np.searchsorted(sorted_scores, thresholds, side="left")


def threshold_for_sensitivity(p, labels, target: float) -> Optional[float]:
    """The highest observed score whose threshold reaches sensitivity >= `target` on these predictions.

    Chosen on validation and applied to test, the test sensitivity estimates what the rule delivers on new data.
    Sensitivity only changes at positives' scores, so this is the score of the ceil(target * P)-th highest
    positive. None without positives.
    """
    if not 0 < target <= 1:
        raise ValueError(f"the target sensitivity must be in (0, 1], got {target}")
    p, labels = check_binary(p, labels)
    positives = np.sort(p[labels == 1])
    if not len(positives):
        return None
    candidates = np.unique(positives)[::-1]  # highest first
    # tp / P as two_by_two computes it, so the reported sensitivity at this threshold is >= target too.
    reached = _at_or_above(positives, candidates) / len(positives) >= target
    return float(candidates[np.argmax(reached)])


def youden_threshold(p, labels) -> Optional[float]:
    """The observed score maximising Youden's J = sensitivity + specificity - 1; on ties the highest one.

    None unless both classes are present (J is undefined otherwise).
    """
    p, labels = check_binary(p, labels)
    positives, negatives = np.sort(p[labels == 1]), np.sort(p[labels == 0])
    if not len(positives) or not len(negatives):
        return None
    candidates = np.unique(p)[::-1]  # highest first, so argmax picks the highest of tied thresholds
    # J * P * N = tp * N - fp * P in integers: thresholds with equal J compare equal, free of rounding.
    j = (_at_or_above(positives, candidates) * len(negatives)
         - _at_or_above(negatives, candidates) * len(positives))
    return float(candidates[np.argmax(j)])


def operating_points(val_p, val_labels, test_p, test_labels, target_sensitivity: float = 0.95) -> dict:
    """Three thresholds chosen on validation, and the two-by-two table of each on validation and on test.

    The thresholds: "0.5" (fixed), "target_sensitivity" (`threshold_for_sensitivity` at `target_sensitivity`)
    and "youden" (`youden_threshold`), all under the p >= threshold rule. A threshold that validation cannot
    define is None, and so are its tables.

    Returns:
        {"target_sensitivity": float, "thresholds": {name: float or None},
         "validation": {name: two_by_two or None}, "test": {name: two_by_two or None}}
    """
    thresholds = {"0.5": 0.5,
                  "target_sensitivity": threshold_for_sensitivity(val_p, val_labels, target_sensitivity),
                  "youden": youden_threshold(val_p, val_labels)}

    def tables(p, labels):
        return {name: None if t is None else two_by_two(p, labels, t) for name, t in thresholds.items()}

    return {"target_sensitivity": float(target_sensitivity), "thresholds": thresholds,
            "validation": tables(val_p, val_labels), "test": tables(test_p, test_labels)}


# --- Intervals over volumes or patients ---------------------------------------------------------------------

class Interval(NamedTuple):
    """A bootstrap interval; low and high are None when no draw gave a defined statistic."""

    low: Optional[float]
    high: Optional[float]
    skipped: int  # draws where the statistic was undefined (None or NaN), left out of the percentiles


def bootstrap_interval(statistic: Callable[..., Optional[float]], groups, *arrays, draws: int = 1000,
                       seed: int = 0, level: float = 0.95) -> Interval:
    """Percentile bootstrap interval of `statistic` that resamples whole groups (volumes or patients).

    B-scans of one volume look alike and share a label, so resampling B-scans would pretend to more independent
    evidence than there is and give too narrow an interval. Each draw picks as many groups as there are, with
    replacement, concatenates their rows (a group drawn twice contributes its rows twice) and applies
    `statistic(*arrays_resampled)`. The interval is the (1 - level)/2 and (1 + level)/2 percentiles of the
    defined draws (numpy's linear interpolation); the plain percentile method, not BCa.

    Args:
        statistic: e.g. `auc`; returns a number, or None/NaN where undefined (one class in the draw).
        groups: the group of each row.
        *arrays: row-aligned arrays (scores, labels, ...), resampled together.
        draws: bootstrap replicates; seed: numpy Generator seed (fixed seed, fixed interval).

    Returns:
        Interval(low, high, skipped); `interval._asdict()` is JSON-friendly.
    """
    groups = np.asarray(groups)
    arrays = [np.asarray(a) for a in arrays]
    if any(len(a) != len(groups) for a in arrays):
        raise ValueError("every array needs one row per entry of `groups`")
    if not 0 < level < 1 or draws < 1:
        raise ValueError(f"level must be in (0, 1) and draws >= 1, got {level} and {draws}")
    names, inverse = np.unique(groups, return_inverse=True)
    if not len(names):
        raise ValueError("bootstrap_interval needs at least one group")
    rows_of = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(draws):
        rows = np.concatenate([rows_of[g] for g in rng.integers(0, len(names), len(names))])
        value = statistic(*(a[rows] for a in arrays))
        if value is not None and not math.isnan(value):
            values.append(float(value))
    if not values:
        return Interval(None, None, draws)
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(low), float(high), draws - len(values))


# --- K classes ----------------------------------------------------------------------------------------------

def predicted_classes(probabilities) -> np.ndarray:
    """The class each softmax row predicts: for two classes fluid iff p[:, 1] > 0.5, else the argmax.

    Two classes follow the paper (and early_stop.evaluate_probabilities, and predictions.csv's one column): a
    tie at exactly 0.5 is class 0, as argmax would have it too. Unlike argmax the rule reads one column only, so
    it holds for rows whose float32 sum is not exactly 1. K > 2: argmax, ties to the lowest class index.
    """
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.shape[1] == 2:
        return (probabilities[:, 1] > 0.5).astype(np.int64)
    return np.argmax(probabilities, axis=1)


def cross_entropy(probabilities, labels) -> Optional[float]:
    """Mean -log p[label], each p clipped to [EPSILON, 1 - EPSILON] as Keras and evaluate_probabilities do."""
    probabilities, labels = check_classes(probabilities, labels)
    if not len(labels):
        return None
    picked = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1.0 - EPSILON)
    return float(-np.mean(np.log(picked)))


def multiclass_scores(probabilities, labels, classes: Sequence[str]) -> dict:
    """Accuracy, cross-entropy, one-vs-rest ROC AUC per class and their macro mean, and the confusion matrix.

    Predictions as `predicted_classes`, so for two classes the accuracy is the paper's. A class's AUC scores
    its own column against "this class or not"; it is None where `labels` hold no row of that class or only
    such rows. The macro AUC averages the defined ones (None if none is).

    Returns:
        {"classes": [str], "n": int, "accuracy": float, "cross_entropy": float, "auc": {class: float or None},
         "macro_auc": float or None, "confusion": K x K ints, rows the true class, columns the predicted one}.
    """
    classes = [str(c) for c in classes]
    probabilities, labels = check_classes(probabilities, labels, len(classes))
    if not len(labels):
        raise ValueError("multiclass_scores needs at least one row")
    predicted = predicted_classes(probabilities)
    aucs = {name: auc(probabilities[:, k], (labels == k).astype(np.int64)) for k, name in enumerate(classes)}
    defined = [a for a in aucs.values() if a is not None]
    confusion = sk_metrics.confusion_matrix(labels, predicted, labels=list(range(len(classes))))
    return {"classes": classes, "n": int(len(labels)), "accuracy": float(np.mean(predicted == labels)),
            "cross_entropy": cross_entropy(probabilities, labels), "auc": aucs,
            "macro_auc": float(np.mean(defined)) if defined else None, "confusion": confusion.tolist()}


# --- Fluid types, per B-scan and per volume (RETOUCH's detection task) -------------------------------------

def type_labels(irf, srf, ped, min_voxels: int = 1) -> np.ndarray:
    """(n, 3) 0/1 per B-scan and type (columns FLUID_TYPES): 1 where that code has at least `min_voxels` voxels.

    The voxel counts are BScans.irf/.srf/.ped; a count of -1 (no annotation, image folders) is refused rather
    than read as "no fluid".
    """
    counts = np.stack([np.asarray(c, np.int64) for c in (irf, srf, ped)], axis=1)
    if min_voxels < 1:
        raise ValueError(f"min_voxels must be >= 1, got {min_voxels}")
    if np.any(counts < 0):
        raise ValueError("voxel counts of -1 (unannotated B-scans) carry no fluid type")
    return (counts >= min_voxels).astype(np.int64)


def _per_volume(values, volume_ids, what: str) -> Tuple[List[str], np.ndarray]:
    values = np.asarray(values)
    volume_ids = np.asarray(volume_ids)
    if values.ndim != 2 or values.shape[1] != len(FLUID_TYPES) or volume_ids.shape != values.shape[:1]:
        raise ValueError(f"{what} must be (n, {len(FLUID_TYPES)}) with one volume id per row, got "
                         f"{values.shape} and {volume_ids.shape}")
    names, inverse = np.unique(volume_ids, return_inverse=True)
    by_volume = np.stack([values[inverse == v].max(axis=0) for v in range(len(names))]) if len(names) \
        else values[:0]
    return [str(name) for name in names], by_volume


def volume_scores(p_types, volume_ids) -> Tuple[List[str], np.ndarray]:
    """Per volume and type, the highest probability among its B-scans (RETOUCH's volume score from B-scans).

    Pass one out-of-fold prediction per B-scan (predictions pooled over folds, each volume scored once).

    Returns:
        (volume ids sorted, (volumes, 3) float array), rows aligned with `volume_labels`' for the same ids.
    """
    return _per_volume(np.asarray(p_types, np.float64), volume_ids, "p_types")


def volume_labels(labels, volume_ids) -> Tuple[List[str], np.ndarray]:
    """Per volume and type, 1 when any of its B-scans has that type (from `type_labels`); sorted volume ids."""
    return _per_volume(np.asarray(labels, np.int64), volume_ids, "labels")


def _type_table(scores, labels, score: Callable) -> Dict[str, Optional[float]]:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    if scores.ndim != 2 or scores.shape[1] != len(FLUID_TYPES) or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be (n, {len(FLUID_TYPES)}), got {scores.shape} "
                         f"and {labels.shape}")
    return {name: score(scores[:, t], labels[:, t]) for t, name in enumerate(FLUID_TYPES)}


def type_auc(p_types, labels) -> Dict[str, Optional[float]]:
    """ROC AUC per fluid type over rows (B-scans, or volumes); None for a type with one answer only."""
    return _type_table(p_types, labels, auc)


def type_accuracy(p_types, labels) -> Dict[str, Optional[float]]:
    """Accuracy per fluid type with the paper's rule: present iff the sigmoid output p > 0.5. None without rows."""
    return _type_table(p_types, labels, lambda p, y: float(np.mean((p > 0.5) == y)) if len(y) else None)


def per_volume_auc(scores, labels, vendors) -> Dict[str, dict]:
    """RETOUCH's detection score: AUC per vendor and fluid type over volumes, from `volume_scores`/`volume_labels`.

    Never mixes vendors: the volume score is a maximum over B-scans, which grows with their number (Cirrus
    128, Spectralis 49, Topcon 128 per volume), so pooled vendors would rank partly by device. Compute it on
    out-of-fold scores pooled over folds, each volume scored once: one fold holds too few volumes for an AUC.
    An AUC is None where a vendor's volumes all have the type or all lack it.

    Returns:
        {vendor: {"volumes": int, "with_type": {type: int}, "auc": {type: float or None}}}, vendors sorted.
    """
    scores, labels, vendors = np.asarray(scores, np.float64), np.asarray(labels, np.int64), np.asarray(vendors)
    if vendors.shape != scores.shape[:1]:
        raise ValueError(f"one vendor per volume: {vendors.shape} vendors for {scores.shape[0]} volumes")
    table = {}
    for vendor in np.unique(vendors):
        mine = vendors == vendor
        table[str(vendor)] = {"volumes": int(np.sum(mine)),
                              "with_type": {name: int(labels[mine, t].sum()) for t, name in enumerate(FLUID_TYPES)},
                              "auc": type_auc(scores[mine], labels[mine])}
    return table
