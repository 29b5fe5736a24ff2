"""Learning curves over annotated volumes: how many volumes must be annotated to reach a target score.

A learning-curve study trains each network on the first N volumes of a seeded order of every fold's training
volumes (`octtl.data.folds.training_volumes`), for several N, folds and repeats, and records one validation
score per (fold, repeat, N): a `Point`. This module turns those points into the answer:

- the per-N mean over folds with a 95% interval;
- the inverse power law `pow3(n) = a - b n^-c` (a: the score with unlimited volumes; b, c: how far below it
  one volume is and how fast the gap closes; Figueroa et al. 2012, BMC Med Inform Decis Mak 12:8, fit this
  law to classifier learning curves with weights growing with n, as here);
- the number of volumes at which the fitted law reaches a target, with a bootstrap interval that resamples
  folds, then repeats within each fold (the two levels at which the study's scores vary);
- a verdict sentence that says where the answer cannot be read off the data (`NOT_RISING`, `NOT_REACHED`).

Extrapolation is limited to `HORIZON` times the largest N observed: a three-parameter law fitted to a handful
of points says little about the score far beyond them.

Pure numpy at import; scipy is imported inside the functions that need it, so the report stays quick.
"""

import dataclasses
import math
import warnings
from typing import List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

METRICS = ("auc", "accuracy")
HORIZON = 4  # extrapolate up to 4x the largest N observed, no further
CONFIDENCE = 0.95
DRAWS = 200  # bootstrap resamples of a summary

# The verdicts a summary can give instead of a volumes-needed figure; the report and outside checks read them.
NOT_RISING = "the curve does not rise: no extrapolation"
NOT_REACHED = "not reached within 4x the largest N"
NO_FIT = "the law could not be fitted: no extrapolation"
# The upper end of the volumes-needed interval where it lies beyond the horizon.
BEYOND = "> 4x the largest N"

# `rows`' columns, in order.
COLUMNS = ("design", "arch", "setting", "metric", "n", "points", "mean", "ci_low", "ci_high", "fitted",
           "fit_a", "fit_b", "fit_c", "target", "needed", "needed_low", "needed_high", "horizon", "verdict")

_C_MAX = 10.0  # beyond c = 10 the law is a step at n = 1..2 whatever c is; the bound keeps n^-c finite


class Point(NamedTuple):
    """One trained model's validation score: fold and repeat of the study, N training volumes, the score."""

    fold: int
    repeat: int
    n: int
    value: float


def pow3(n, a: float, b: float, c: float):
    """The inverse power law a - b n^-c: rises towards a as n grows (for b, c > 0)."""
    return a - b * np.power(np.asarray(n, float), -c)


def _bounds(metric: str) -> Tuple[List[float], List[float]]:
    """(lower, upper) bounds of (a, b, c): a score's ceiling is at most 1, an AUC's at least chance (0.5)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return [0.5 if metric == "auc" else 0.0, 1e-6, 1e-3], [1.0, np.inf, _C_MAX]


def fit(n: Sequence[float], perf: Sequence[float], metric: str) -> Optional[Tuple[float, float, float]]:
    """(a, b, c) of `pow3` fitted to the scores `perf` at volume counts `n` (one pair per trained model).

    Weighted least squares (scipy's curve_fit, trust-region reflective within the bounds) with weights
    proportional to n (sigma = 1/sqrt(n)): a score trained on more volumes varies less and says more about the
    ceiling. Bounds: a in [0.5, 1] for 'auc', [0, 1] for 'accuracy'; b > 0 and c > 0, so the law rises.

    Returns:
        (a, b, c), or None where the law cannot be fitted: fewer than three distinct N with a finite score
        (three parameters), or the optimizer fails to converge or returns non-finite values. Never raises for a
        failed fit, so one bad bootstrap resample does not end a report.
    """
    from scipy import optimize

    lower, upper = _bounds(metric)
    n, perf = np.asarray(n, float), np.asarray(perf, float)
    keep = np.isfinite(n) & np.isfinite(perf) & (n > 0)
    n, perf = n[keep], perf[keep]
    if len(np.unique(n)) < 3:
        return None
    # Start from a ceiling just above the best score, a gap at the smallest N matching the data, and c = 0.5.
    a0 = float(np.clip(perf.max() + 0.01, lower[0] + 1e-3, upper[0] - 1e-6))
    c0 = 0.5
    b0 = max((a0 - perf[n == n.min()].mean()) * n.min() ** c0, 1e-3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # OptimizeWarning: no covariance, which is not used
            params, _ = optimize.curve_fit(pow3, n, perf, p0=[a0, b0, c0], sigma=1 / np.sqrt(n),
                                           bounds=(lower, upper), jac=_jacobian, maxfev=20000)
    except (RuntimeError, ValueError, np.linalg.LinAlgError):
        return None
    if not np.all(np.isfinite(params)):
        return None
    return float(params[0]), float(params[1]), float(params[2])


def _jacobian(n, a, b, c):
    """d pow3 / d(a, b, c) at every n: (1, -n^-c, b n^-c ln n)."""
    power = np.power(n, -c)
    return np.stack([np.ones_like(n), -power, b * power * np.log(n)], axis=1)


def volumes_needed(params: Optional[Tuple[float, float, float]], target: float) -> float:
    """The n at which a - b n^-c reaches `target`: (b / (a - target))^(1/c); inf where a <= target.

    NaN for no fit. Not rounded: the fitted law is continuous; whole volumes are the caller's rounding.
    """
    if params is None:
        return math.nan
    a, b, c = params
    if a <= target:
        return math.inf
    return float((b / (a - target)) ** (1 / c))


def rises(n: Sequence[float], means: Sequence[float]) -> bool:
    """Whether the per-N means rise with N, decided on the data and not the fit (which rises by construction).

    True only when Spearman's rank correlation of mean against N is above 0; 0 or less (flat, falling, or
    undefined for fewer than two N or constant means) is a curve that does not rise.
    """
    from scipy import stats as scipy_stats

    n, means = np.asarray(n, float), np.asarray(means, float)
    if len(n) < 2 or np.all(means == means[0]) or np.all(n == n[0]):
        return False
    rho = scipy_stats.spearmanr(n, means)[0]
    return bool(np.isfinite(rho) and rho > 0)


def _arrays(points) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(fold, repeat, n, value) arrays of points given as `Point`s, 4-sequences or mappings with those keys."""
    records = [(p["fold"], p["repeat"], p["n"], p["value"]) if isinstance(p, Mapping) else tuple(p)
               for p in points]
    if not records:
        raise ValueError("a learning curve needs at least one point (fold, repeat, n, value)")
    fold, repeat, n, value = zip(*records)
    return np.asarray(fold), np.asarray(repeat), np.asarray(n, float), np.asarray(value, float)


def bootstrap(points, metric: str, draws: int = DRAWS, seed: int = 0) -> List[Optional[Tuple[float, float, float]]]:
    """Fits of `draws` resampled studies: folds drawn with replacement, then repeats within each drawn fold.

    A fold's repeats share its training and validation volumes, so the folds are the study's independent units
    and are resampled first; a drawn fold contributes the points (every N) of as many of its repeats, drawn
    with replacement, as it has. A draw whose fit fails gives None.
    """
    fold, repeat, n, value = _arrays(points)
    rng = np.random.default_rng(seed)
    folds = np.unique(fold)
    # The points of each (fold, repeat) and the repeats of each fold, gathered once.
    cells = {}
    for i, key in enumerate(zip(fold.tolist(), repeat.tolist())):
        cells.setdefault(key, []).append(i)
    repeats = {f: sorted(r for g, r in cells if g == f) for f in folds.tolist()}
    fits = []
    for _ in range(draws):
        chosen = []
        for f in rng.choice(folds, len(folds)).tolist():
            for r in rng.choice(len(repeats[f]), len(repeats[f])).tolist():
                chosen.extend(cells[(f, repeats[f][r])])
        fits.append(fit(n[chosen], value[chosen], metric))
    return fits


def band(fits, grid: Sequence[float], confidence: float = CONFIDENCE) -> Tuple[np.ndarray, np.ndarray]:
    """Pointwise percentile band (2.5th and 97.5th for 95%) of the fitted curves at each n of `grid`.

    Fits that failed (None) are left out; with none left the band is NaN.
    """
    grid = np.asarray(grid, float)
    params = np.array([f for f in fits if f is not None], float).reshape(-1, 3)
    if not len(params):
        return np.full(grid.shape, math.nan), np.full(grid.shape, math.nan)
    curves = params[:, :1] - params[:, 1:2] * np.power(grid[None, :], -params[:, 2:3])
    tail = 100 * (1 - confidence) / 2
    return np.percentile(curves, tail, axis=0), np.percentile(curves, 100 - tail, axis=0)


@dataclasses.dataclass
class Summary:
    """One learning curve (one design x network x setting x metric), ready for a table row or a figure.

    Attributes:
        metric, target: the score ('auc' or 'accuracy') and the value it should reach.
        n: the distinct volume counts observed, ascending.
        mean: per N, the mean over folds of each fold's mean over its repeats (every fold weighs the same).
        ci_low, ci_high: per N, the t interval of that mean over folds (see `summarize`'s ratio).
        count: per N, how many points (fold x repeat) it has.
        fit: (a, b, c) of `pow3` fitted to every point, or None.
        rises: whether the per-N means rise with N (`rises`).
        needed: volumes at which the fit reaches the target (continuous; inf where never); NaN where no
            figure is given (the curve does not rise, or no fit).
        needed_low, needed_high: its bootstrap percentile interval; inf marks an end beyond the horizon.
        horizon: HORIZON x the largest N: the furthest the law is extrapolated.
        verdict: the volumes needed with its interval, or NOT_RISING, NOT_REACHED or NO_FIT.
        fits: the bootstrap draws' fits (None where a draw's fit failed).
        grid, band_low, band_high: the bootstrap band of the fitted curve from the smallest N to the horizon.
        points_n, points_value: every point's N and score (for the figure's faint points).
    """

    metric: str
    target: float
    n: np.ndarray
    mean: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    count: np.ndarray
    fit: Optional[Tuple[float, float, float]]
    rises: bool
    needed: float
    needed_low: float
    needed_high: float
    horizon: float
    verdict: str
    fits: list
    grid: np.ndarray
    band_low: np.ndarray
    band_high: np.ndarray
    points_n: np.ndarray
    points_value: np.ndarray


def _whole(volumes: float) -> int:
    """Volumes as a whole number, rounded up (a fraction of a volume still has to be annotated), at least 1."""
    return max(math.ceil(volumes - 1e-9), 1)  # the margin keeps 12.000000001 from float error at 12


def summarize(points, metric: str, target: float, draws: int = DRAWS, seed: int = 0, ratio: float = 0.0,
              confidence: float = CONFIDENCE) -> Summary:
    """The learning curve of one design x network x setting: means, fit, volumes needed and a verdict.

    The per-N interval is the t interval of the mean over folds of the fold means (k-1 degrees of freedom),
    clipped to [0, 1]; `ratio` (n_test / n_train) widens it by Nadeau and Bengio's correction
    (`octtl.results.stats.corrected_interval`) for training sets that overlap between folds; 0 is the textbook
    interval. The volumes-needed interval is the bootstrap percentile interval over `draws` resamples
    (`bootstrap`), draws whose fit failed left out; an end beyond the horizon reads BEYOND. With 5 folds
    there are only 126 distinct resamples of the folds, so the band and that interval are approximate, and
    like any bootstrap of five units somewhat too narrow: in simulated studies the 95% band covers the true
    curve at about 89% of the observed N where the volume draw dominates the spread, about 82% where the folds'
    own offsets do (tests/results/test_learning_curve.py).

    The verdict is exactly one of: NOT_RISING where the means do not rise with N (no volumes-needed figure,
    whatever the fit says); NO_FIT where the law cannot be fitted; NOT_REACHED where the fit reaches the target
    only beyond the horizon or never; else "12 volumes (95% bootstrap interval 8 to 20)" in whole volumes
    rounded up, whose upper end reads BEYOND when more than the upper tail (2.5% at 95%) of the resamples
    reach the target only beyond the horizon or never.
    """
    from octtl.results import stats

    fold, _, n, value = _arrays(points)
    ns = np.unique(n)
    means, lows, highs, counts = [], [], [], []
    for x in ns:
        at = n == x
        per_fold = [value[at & (fold == f)].mean() for f in np.unique(fold[at])]
        means.append(float(np.mean(per_fold)))
        low, high = stats.corrected_interval(per_fold, ratio, confidence, bounds=(0.0, 1.0))
        lows.append(low)
        highs.append(high)
        counts.append(int(at.sum()))
    params = fit(n, value, metric)
    horizon = float(HORIZON * ns.max())
    fits = bootstrap(points, metric, draws, seed) if draws else []
    grid = np.geomspace(ns.min(), horizon, 64)
    band_low, band_high = band(fits, grid, confidence)
    up = rises(ns, means)
    needed = needed_low = needed_high = math.nan
    if not up:
        verdict = NOT_RISING
    elif params is None:
        verdict = NO_FIT
    elif not volumes_needed(params, target) <= horizon:
        verdict = NOT_REACHED
    else:
        needed = volumes_needed(params, target)
        needed_low, needed_high = _needed_interval(fits, target, horizon, confidence)
        low, high = (BEYOND if math.isinf(x) else "" if math.isnan(x) else _whole(x) for x in (needed_low, needed_high))
        interval = "not available: no fitted resample" if math.isnan(needed_low) else f"{low} to {high}"
        verdict = f"{_whole(needed)} volumes ({confidence:.0%} bootstrap interval {interval})"
    return Summary(metric, float(target), ns, np.array(means), np.array(lows), np.array(highs), np.array(counts),
                   params, up, needed, needed_low, needed_high, horizon, verdict, fits, grid, band_low, band_high,
                   n, value)


def _needed_interval(fits, target: float, horizon: float, confidence: float) -> Tuple[float, float]:
    """Percentile interval of the resamples' volumes needed; an end beyond the horizon is inf (NaN: no fits)."""
    needed = np.array([volumes_needed(f, target) for f in fits if f is not None], float)
    if not len(needed):
        return math.nan, math.nan
    # Beyond the horizon the value is not trusted, only its side: a finite stand-in keeps percentiles defined.
    needed = np.where(needed > horizon, 2 * horizon, needed)
    tail = 100 * (1 - confidence) / 2
    ends = np.percentile(needed, [tail, 100 - tail])
    return tuple(math.inf if e > horizon else float(e) for e in ends)


def _number(x, digits: int = 4):
    """A CSV cell: x rounded to `digits` decimals, '' for NaN, infinity or None."""
    return "" if x is None or not np.isfinite(x) else round(float(x), digits)


def rows(summary: Summary, design: str, arch: str, setting: str) -> List[dict]:
    """CSV rows (dicts keyed by COLUMNS) of one learning curve: one row per N observed, ascending.

    Each row holds that N's points (count), mean and interval (ci_low, ci_high) and the fitted law's value
    there (fitted); the curve's own columns (fit_a, fit_b, fit_c, target, needed, needed_low, needed_high,
    horizon, verdict) repeat on every row, so any one row reads alone. needed* are whole volumes rounded up,
    given only where the verdict gives a figure; an empty needed_high with a figure is the verdict's BEYOND.
    Empty cells: no value (no fit, no figure). Writes nothing: the caller picks the file
    (learning_curve_{design}.csv) and writes the rows of every network and setting with octtl.outputs.write_csv.
    """
    a, b, c = summary.fit if summary.fit is not None else (None, None, None)
    figure = np.isfinite(summary.needed)

    def whole(x):
        return _whole(x) if figure and np.isfinite(x) else ""

    out = []
    for i, n in enumerate(summary.n.tolist()):
        fitted = pow3(n, *summary.fit) if summary.fit is not None else None
        out.append(dict(
            design=design, arch=arch, setting=setting, metric=summary.metric, n=int(n), points=int(summary.count[i]),
            mean=_number(summary.mean[i]), ci_low=_number(summary.ci_low[i]), ci_high=_number(summary.ci_high[i]),
            fitted=_number(fitted), fit_a=_number(a, 6), fit_b=_number(b, 6), fit_c=_number(c, 6),
            target=summary.target, needed=whole(summary.needed), needed_low=whole(summary.needed_low),
            needed_high=whole(summary.needed_high), horizon=int(summary.horizon), verdict=summary.verdict))
    return out
