"""Statistics for comparing networks across the folds of one cross-validation: intervals and paired tests.

Intervals: folds of a cross-validation are not independent samples (every two training sets share most of
their data; in the limited design the validation sets overlap too), so the plain t interval of the mean over
folds is too narrow. `corrected_interval` is the corrected resampled t interval of Nadeau and Bengio (2003,
Machine Learning 52:239-281): the variance of the mean is s^2 (1/k + n_test/n_train) instead of s^2/k, with
k-1 degrees of freedom.

Paired tests (Demsar 2006, JMLR 7:1-30), on a folds x networks table where one fold index is one split for
every network: the Friedman test over all networks (scipy, chi-square with the correction for ties, as R's
friedman.test), the Iman-Davenport F form of its statistic, the Nemenyi post-hoc test of every pair
(scikit-posthocs) with its critical difference of average ranks, and for two networks the Wilcoxon signed-rank
test (scipy; zero differences split between the signs, as Demsar recommends). Ranks: 1 is the best (highest)
score, ties share the mean rank.

Pure functions over numbers; no TensorFlow, so the report stays quick.
"""

import dataclasses
import math
import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import stats as scipy_stats

from octtl import runs

ALPHA = 0.05
CONFIDENCE = 0.95
MIN_FOLDS = 5  # fewer common folds: no paired test is run
# What makes one fold index the same split in two runs (octtl.data.folds.splits is a function of these and the data;
# a held-out test fold moves the validation fold too),
# and the Keras backend: its batches and random draws differ, so folds of two backends are not paired.
PAIRING_FIELDS = ("data", "design", "folds", "seed", "group_by_volume", "test_fold", "backend")


def data_identity(result: dict):
    """The data a run was split from: result.json's `data` (manifest identity) when present, else `data_dir`."""
    data = result.get("data")
    if data is not None:
        # A dict is not hashable; its sorted items are, and compare equal when the contents do.
        return tuple(sorted(data.items())) if isinstance(data, dict) else data
    return result.get("data_dir")


def pairing_key(result: dict) -> tuple:
    """Runs with equal keys split their data identically at equal fold indices, so their folds pair up."""
    return tuple(data_identity(result) if field == "data" else runs.recorded_setting(result, field)
                 for field in PAIRING_FIELDS)


def describe_key_difference(key: tuple, reference: tuple) -> str:
    """'seed 1 (the others: 0)' for the fields where a pairing key differs from the reference key."""
    parts = []
    for field, mine, theirs in zip(PAIRING_FIELDS, key, reference):
        if mine != theirs:
            name = "data" if field == "data" else field
            parts.append(f"{name} {_show(mine)} (the others: {_show(theirs)})")
    return "; ".join(parts)


def _show(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(f"{k}={v}" for k, v in value)
    return "not recorded" if value is None else str(value)


def test_train_ratio(design: str, folds: int) -> float:
    """n_test/n_train of a design's folds when result.json lacks the sizes (k-fold: 1/(k-1) or k-1)."""
    if folds < 2:
        return math.nan
    return 1 / (folds - 1) if design == "baseline" else folds - 1 if design == "limited" else math.nan


def corrected_interval(values: Sequence[float], ratio: float, confidence: float = CONFIDENCE,
                       bounds: Tuple[float, float] = (-math.inf, math.inf)) -> Tuple[float, float]:
    """Nadeau-Bengio corrected resampled t interval of the mean of k fold scores.

    Args:
        values: One score per fold.
        ratio: n_test/n_train, validation over training examples per fold.
        confidence: Coverage of the interval.
        bounds: The range of the score (accuracy and AUC: 0 to 1); the interval is clipped to it.

    Returns:
        (low, high); NaN where undefined (fewer than two values, or no ratio).
    """
    values = np.asarray([v for v in values if v is not None], float)
    k = len(values)
    if k < 2 or not np.isfinite(ratio):
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + confidence / 2, k - 1) * math.sqrt((1 / k + ratio) * values.var(ddof=1))
    mean = values.mean()
    return float(max(mean - half, bounds[0])), float(min(mean + half, bounds[1]))


def average_ranks(scores) -> np.ndarray:
    """Mean rank of each network (column) over folds (rows); 1 = highest score, ties share the mean rank."""
    scores = np.asarray(scores, float)
    return scipy_stats.rankdata(-scores, axis=1).mean(axis=0)


@dataclasses.dataclass
class Friedman:
    """The Friedman test of a folds x networks table.

    Attributes:
        statistic: Friedman chi-square, corrected for ties (NaN when every fold ties all networks).
        pvalue: From the chi-square distribution with k-1 degrees of freedom.
        iman_davenport: Iman-Davenport F_F = (n-1) chi2 / (n (k-1) - chi2), less conservative (Demsar 2006).
        iman_davenport_pvalue: From F with k-1 and (k-1)(n-1) degrees of freedom.
        ranks: Average rank of each network (1 = best).
        n: Folds (blocks).
        k: Networks.
    """

    statistic: float
    pvalue: float
    iman_davenport: float
    iman_davenport_pvalue: float
    ranks: np.ndarray
    n: int
    k: int


def iman_davenport(chi2: float, n: int, k: int) -> Tuple[float, float]:
    """Iman-Davenport F_F from a Friedman chi-square of n blocks and k treatments, and its p-value."""
    denominator = n * (k - 1) - chi2
    if not np.isfinite(chi2):
        return math.nan, math.nan
    if denominator <= 0:  # every block ranks the networks the same way: F_F is infinite
        return math.inf, 0.0
    f = (n - 1) * chi2 / denominator
    return float(f), float(scipy_stats.f.sf(f, k - 1, (k - 1) * (n - 1)))


def friedman(scores) -> Friedman:
    """Friedman test of a folds x networks score table (at least 3 networks and 2 folds)."""
    scores = np.asarray(scores, float)
    n, k = scores.shape
    if k < 3 or n < 2:
        raise ValueError(f"the Friedman test needs at least 3 networks and 2 folds, got {k} and {n}")
    if np.all(scores == scores[:, :1]):
        chi2, p = math.nan, math.nan  # all tied in every fold: the tie correction divides by zero
    else:
        chi2, p = scipy_stats.friedmanchisquare(*scores.T)
    f, f_p = iman_davenport(float(chi2), n, k)
    return Friedman(float(chi2), float(p), f, f_p, average_ranks(scores), n, k)


def nemenyi(scores) -> np.ndarray:
    """k x k p-values of the Nemenyi test of every pair of networks (columns) over folds (rows)."""
    import scikit_posthocs  # imports pandas; only the report needs it

    return scikit_posthocs.posthoc_nemenyi_friedman(np.asarray(scores, float)).to_numpy()


def nemenyi_q(k: int, alpha: float = ALPHA) -> float:
    """Demsar's q_alpha: the studentized range quantile for k groups (infinite df) over sqrt(2)."""
    return float(scipy_stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2))


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of average ranks: q_alpha sqrt(k (k+1) / (6 n))."""
    return nemenyi_q(k, alpha) * math.sqrt(k * (k + 1) / (6 * n))


def smallest_nemenyi_p(k: int, n: int) -> float:
    """The smallest Nemenyi p any pair can get with k networks and n folds (ranks k-1 apart)."""
    q = (k - 1) / math.sqrt(k * (k + 1) / (6 * n))
    return float(scipy_stats.studentized_range.sf(q * math.sqrt(2), k, np.inf))


@dataclasses.dataclass
class Wilcoxon:
    """Wilcoxon signed-rank test of two networks over folds: the smaller signed-rank sum and its p-value."""

    statistic: float
    pvalue: float


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> Wilcoxon:
    """Two-sided Wilcoxon signed-rank test of paired fold scores (exact where scipy can, zeros split)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.all(a == b):
        return Wilcoxon(0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns that ties or zeros rule out exactness
        result = scipy_stats.wilcoxon(a, b, zero_method="zsplit")
    return Wilcoxon(float(result.statistic), float(result.pvalue))


def smallest_wilcoxon_p(n: int) -> float:
    """The smallest exact two-sided Wilcoxon p with n pairs: every difference of one sign, 2 / 2^n."""
    return 2.0 / 2 ** n


def smallest_pairwise_p(k: int, n: int) -> float:
    """The smallest p the pairwise test of k networks over n folds can reach (Wilcoxon for 2, else Nemenyi)."""
    return smallest_wilcoxon_p(n) if k == 2 else smallest_nemenyi_p(k, n)


def format_p(p: Optional[float]) -> str:
    """'0.0625', '0.139', '<0.001', 'n/a': three significant digits, so 0.0625 is not rounded to 0.05's side."""
    if p is None or not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3g}"
