"""Calibration of predicted probabilities: Brier score, equal-mass ECE, reliability bins, temperature scaling.

Accuracy and AUC say whether a network ranks and separates B-scans; calibration says whether its 0.9 means fluid
nine times in ten, which a clinician reading p_fluid needs (issue #24). Two input forms, as the networks give them:
  * binary: p, shape (n,), the probability of the positive class ('fluid'), against 0/1 labels;
  * K classes: probabilities, shape (n, K), softmax rows, against integer labels 0..K-1 (a two-class softmax
    output is K = 2).

Binning: equal-mass, not equal-width. Scores are sorted (stably, so ties keep their input order) and
np.array_split cuts them into `bins` groups of nearly equal size (sizes differ by at most one); a network whose
scores crowd near 0 and 1, as fine-tuned CNNs' do, would leave most equal-width bins empty or tiny.

Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks", ICML): softmax(z / T) with
one T > 0 fitted by minimising the negative log-likelihood on validation data. The networks save softmax
probabilities, not logits; log p differs from the logits by a constant per row, which softmax ignores, so
log p is used as the logits exactly.

Pure functions over numbers (numpy and scipy; inputs checked by octtl.training.metrics' check_binary and
check_classes, the one owner of the input forms); no TensorFlow. Undefined values are None, never NaN.
"""

from typing import Dict, List, Optional

import numpy as np
from scipy import optimize, special

from octtl.training import metrics

# Temperatures are searched in [1/100, 100]: far beyond any trained network's (Guo et al. report 1 to 3); a fit at
# a bound means the validation set cannot pin T down (e.g. it is perfectly separated, so T -> 0 keeps helping).
T_MIN, T_MAX = 0.01, 100.0
# The smallest positive float32: the networks' softmax is float32, so a probability of 0 is an underflow below
# this; flooring there gives the logit the least extreme value consistent with the output (log = -103.3).
_FLOOR = float(np.nextafter(np.float32(0), np.float32(1)))


def brier(p, labels) -> Optional[float]:
    """Brier score: mean squared distance between predicted probabilities and the answers (0 is perfect).

    Binary p (n,): mean (p - y)^2, the usual binary form, in [0, 1]. K-class probabilities (n, K): Brier's
    original multi-class form, mean over rows of sum over classes (p_k - onehot_k)^2, in [0, 2]; for a two-class
    softmax this is twice the binary score of its positive column. None without rows.
    """
    if np.ndim(p) == 1:
        p, labels = metrics.check_binary(p, labels)
        return float(np.mean((p - labels) ** 2)) if len(p) else None
    probabilities, labels = metrics.check_classes(p, labels)
    if not len(labels):
        return None
    onehot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def _score_and_hit(p, labels):
    """What a calibration bin compares: (score, 0/1 outcome) per row."""
    if np.ndim(p) == 1:
        return metrics.check_binary(p, labels)  # the positive-class probability against the label
    probabilities, labels = metrics.check_classes(p, labels)
    # K classes: the confidence in the predicted class against whether that prediction was right (Guo et al.).
    predicted = np.argmax(probabilities, axis=1)
    return probabilities[np.arange(len(labels)), predicted], (predicted == labels).astype(np.int64)


def reliability(p, labels, bins: int = 10) -> Dict[str, List]:
    """Equal-mass bins of a reliability diagram: per bin the mean score, the observed frequency and the count.

    Binary p (n,): the score is p, the outcome the label. K-class probabilities (n, K): the score is the
    predicted class's probability (argmax, ties to the lowest class), the outcome whether it was right. Bins are
    in increasing score; fewer than `bins` rows give one-row bins and no empty ones.

    Returns:
        {"mean_predicted": [float], "observed": [float], "count": [int]}, one entry per non-empty bin.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    score, hit = _score_and_hit(p, labels)
    order = np.argsort(score, kind="stable")
    groups = [g for g in np.array_split(order, bins) if len(g)]
    return {"mean_predicted": [float(np.mean(score[g])) for g in groups],
            "observed": [float(np.mean(hit[g])) for g in groups],
            "count": [int(len(g)) for g in groups]}


def ece(p, labels, bins: int = 10) -> Optional[float]:
    """Expected calibration error over equal-mass bins: sum_b (n_b / N) |observed_b - mean_predicted_b|.

    Binary p (n,): on the positive-class probability against the labels. K-class probabilities (n, K): on the
    confidence of the predicted class against its accuracy (Guo et al.'s form; pass p[:, 1] instead for the
    binary form of a two-class softmax). Bins as `reliability`. None without rows.
    """
    table = reliability(p, labels, bins)
    count = np.asarray(table["count"], np.float64)
    if not count.sum():
        return None
    gaps = np.abs(np.asarray(table["observed"]) - np.asarray(table["mean_predicted"]))
    return float(np.sum(count / count.sum() * gaps))


def _as_rows(probabilities) -> np.ndarray:
    """(n, K) probabilities; binary p (n,) becomes the two-class rows [1 - p, p]."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim == 1:
        return np.stack([1.0 - probabilities, probabilities], axis=1)
    if probabilities.ndim != 2:
        raise ValueError(f"probabilities must be (n,) or (n, K), got shape {probabilities.shape}")
    return probabilities


def _logits(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probabilities, _FLOOR))


def fit_temperature(probabilities, labels) -> float:
    """The temperature T > 0 minimising the negative log-likelihood of softmax(log p / T) (Guo et al. 2017).

    Fit on validation predictions, apply to test ones with `apply_temperature`. T > 1 softens an overconfident
    network, T < 1 sharpens an underconfident one; the argmax, so accuracy, never changes.

    Args:
        probabilities: softmax outputs (n, K), or binary p_fluid (n,) taken as the rows [1 - p, p].
        labels: integer class per row (0/1 for binary).

    Returns:
        T within [T_MIN, T_MAX] (a bound when the data want a more extreme T, e.g. perfectly separated data).
    """
    rows = _as_rows(probabilities)
    rows, labels = metrics.check_classes(rows, labels)
    if not len(labels):
        raise ValueError("fit_temperature needs at least one row")
    z = _logits(rows)
    z_true = z[np.arange(len(labels)), labels]

    # In the inverse temperature b = 1/T the NLL, mean(logsumexp(b z) - b z_true), is convex (a log-sum-exp of
    # functions linear in b, minus a linear one), so the bounded scalar search finds its one minimum.
    def nll(b):
        return float(np.mean(special.logsumexp(b * z, axis=1) - b * z_true))

    result = optimize.minimize_scalar(nll, bounds=(1 / T_MAX, 1 / T_MIN), method="bounded",
                                      options={"xatol": 1e-9})
    return float(1.0 / result.x)


def apply_temperature(probabilities, temperature: float) -> np.ndarray:
    """softmax(log p / T) per row: the probabilities a temperature-scaled network would give (same shape).

    Binary p_fluid (n,) is scaled as the rows [1 - p, p] and returned as (n,). T = 1 returns the probabilities
    themselves (renormalised to sum to 1 per row).
    """
    if not temperature > 0:
        raise ValueError(f"the temperature must be > 0, got {temperature}")
    scaled = special.softmax(_logits(_as_rows(probabilities)) / temperature, axis=1)
    return scaled[:, 1] if np.ndim(probabilities) == 1 else scaled
