"""Paired comparisons of the networks of each (design, batch) across folds, and predictions pooled for ROC curves.

Fold i of two runs is the same split only when the runs share data, design, number of folds, seed and grouping
(`stats.pairing_key`); only such runs are compared, metric by metric, with the tests of octtl.results.stats: Friedman and
Nemenyi for three networks or more, Wilcoxon for two. The tables themselves are octtl.results.tables.
"""

import collections
import csv
import dataclasses
import math
import pathlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from octtl import outputs, runs
from octtl.errors import InputError

from octtl.results import stats

from octtl.results import tables
from octtl.results.tables import Row

# The result.json field of each compared metric: the paper's (validation) here, the test fold's in tables.ESTIMATES.
METRICS = {"accuracy": "best_accuracy", "auc": "best_auc"}
METRIC_NAMES = {"accuracy": "accuracy", "auc": "AUC"}


@dataclasses.dataclass
class MetricComparison:
    """One metric of a (design, batch) compared fold by fold across the paired networks.

    Attributes:
        metric: 'accuracy' or 'auc'.
        archs: The networks, best average rank first.
        folds: Fold indices every one of them has a value for.
        scores: folds x archs values.
        ranks: Average rank of each network over the folds (1 = best).
        test: 'Friedman' (then Nemenyi for the pairs), 'Wilcoxon', or '' when no test was run.
        reason: Why no test was run ('' when one was).
        friedman: The Friedman test (three or more networks).
        pairwise: archs x archs p-values (Nemenyi, or Wilcoxon for two networks).
        cd: Nemenyi critical difference of average ranks at stats.ALPHA.
        smallest_p: The smallest p the pairwise test can reach with these folds and networks.
        on: 'test' when every compared run has held-out test figures (then they are compared), else
            'validation'.
    """

    metric: str
    archs: List[str]
    folds: List[int]
    scores: np.ndarray
    ranks: np.ndarray
    test: str = ""
    reason: str = ""
    friedman: Optional[stats.Friedman] = None
    pairwise: Optional[np.ndarray] = None
    cd: float = math.nan
    smallest_p: float = math.nan
    on: str = "validation"

    @property
    def pairwise_test(self) -> str:
        """The test of each pair: Nemenyi after a Friedman test, else the test itself ('' for none)."""
        return "Nemenyi" if self.test == "Friedman" else self.test


@dataclasses.dataclass
class Comparison:
    """The networks of one (design, batch) whose folds pair up, those left out and why, and both metrics."""

    design: str
    batch: int
    archs: List[str]
    left_out: List[str]
    accuracy: MetricComparison
    auc: MetricComparison


def comparisons(results: Sequence[dict]) -> List[Comparison]:
    """Paired comparisons of the networks of every (design, batch), in the tables' order.

    Fold i of two runs is the same split only when the runs share data, design, number of folds, seed and
    grouping (`stats.pairing_key`). The networks sharing the most common key are compared; each other network
    is left out with the reason.
    """
    cells: Dict[tuple, Dict[str, List[dict]]] = {}
    for r in results:
        if r.get("status") == "ok":
            cells.setdefault((r["design"], int(r["batch"])), {}).setdefault(r["arch"], []).append(r)
    order = {d: i for i, d in enumerate(tables.DESIGNS)}
    out = []
    for design, batch in sorted(cells, key=lambda c: (order.get(c[0], len(order)), c[0], c[1])):
        by_arch = cells[(design, batch)]
        left_out, keys = [], {}
        for arch in sorted(by_arch):
            mine = collections.Counter(stats.pairing_key(r) for r in by_arch[arch])
            if len(mine) > 1:
                common, _ = mine.most_common(1)[0]
                other = next(k for k in mine if k != common)
                left_out.append(f"{arch}: its own folds were split differently "
                                f"({stats.describe_key_difference(other, common)})")
            else:
                keys[arch] = next(iter(mine))
        counts = collections.Counter(keys.values())
        paired = []
        if counts:
            reference = min(counts, key=lambda k: (-counts[k], repr(k)))
            paired = [a for a in keys if keys[a] == reference]
            left_out += [f"{a}: {stats.describe_key_difference(keys[a], reference)}"
                         for a in keys if keys[a] != reference]
        # A network that finished few folds would leave too few common ones for everybody: leave it out instead.
        folds = {a: {int(r["fold"]) for r in by_arch[a]} for a in paired}
        while len(paired) > 2 and len(set.intersection(*(folds[a] for a in paired))) < stats.MIN_FOLDS:
            fewest = min(paired, key=lambda a: (len(folds[a]), a))
            paired.remove(fewest)
            left_out.append(f"{fewest}: only {len(folds[fewest])} ok fold{'s' if len(folds[fewest]) != 1 else ''}")
        out.append(Comparison(design, batch, paired, left_out,
                              _compare(by_arch, paired, "accuracy"), _compare(by_arch, paired, "auc")))
    return out


def _compare(by_arch: Dict[str, List[dict]], archs: List[str], metric: str) -> MetricComparison:
    on = tables.estimate([r for a in archs for r in by_arch[a]])
    field = tables.ESTIMATES[on][list(METRICS).index(metric)]
    values = {a: {int(r["fold"]): float(r[field]) for r in by_arch[a] if r.get(field) is not None} for a in archs}
    folds = sorted(set.intersection(*(set(v) for v in values.values()))) if archs else []
    scores = np.array([[values[a][f] for a in archs] for f in folds], float).reshape(len(folds), len(archs))
    ranks = stats.average_ranks(scores) if folds else np.full(len(archs), math.nan)
    # Best first: the column order of the pairwise table and the diagram.
    by_rank = sorted(range(len(archs)), key=lambda i: (ranks[i], archs[i]))
    archs, scores, ranks = [archs[i] for i in by_rank], scores[:, by_rank], ranks[by_rank]
    result = MetricComparison(metric, archs, folds, scores, ranks, on=on)
    k, n = len(archs), len(folds)
    if k < 2:
        result.reason = "fewer than two networks to compare"
    elif n < stats.MIN_FOLDS:
        result.reason = (f"{n} fold{'s' if n != 1 else ''} common to all networks; the paired tests need at least "
                         f"{stats.MIN_FOLDS}")
    elif k == 2:
        result.test = "Wilcoxon"
        p = stats.wilcoxon(scores[:, 0], scores[:, 1]).pvalue
        result.pairwise = np.array([[1.0, p], [p, 1.0]])
    else:
        result.test = "Friedman"
        result.friedman = stats.friedman(scores)
        result.pairwise = stats.nemenyi(scores)
        result.cd = stats.critical_difference(k, n)
    if result.test:
        result.smallest_p = stats.smallest_pairwise_p(k, n)
    return result


def comparison_notes(c: MetricComparison) -> List[str]:
    """What a reader must know about one metric's comparison: no test and why, or the test's limits."""
    name = METRIC_NAMES[c.metric]
    if not c.test:
        return [f"{name}: no test ({c.reason})."]
    out = []
    if c.smallest_p > stats.ALPHA:
        what = ("exact two-sided Wilcoxon p" if c.test == "Wilcoxon"
                else f"Nemenyi p for {len(c.archs)} networks")
        out.append(f"{name}: with {len(c.folds)} folds the smallest {what} is {c.smallest_p:.4g} > {stats.ALPHA}: "
                   "no pair can be significant at 0.05 whatever the scores.")
    if c.friedman is not None and not np.isfinite(c.friedman.statistic):
        out.append(f"{name}: every network scored the same on every fold; nothing to test.")
    return out


def comparison_lines(c: Comparison) -> List[str]:
    """One (design, batch)'s tests in sentences: the test across networks and the significant pairs, per metric."""
    out = []
    for m in (c.accuracy, c.auc):
        head = f"batch size {c.batch}, {METRIC_NAMES[m.metric]}"
        if not m.test:
            out.append(f"{head}: no test ({m.reason})")
            continue
        over = f"over {len(m.folds)} folds of {', '.join(m.archs)}"
        if m.friedman is not None:
            line = f"{head}: Friedman p = {stats.format_p(m.friedman.pvalue)} {over}"
        else:
            line = f"{head}: Wilcoxon p = {stats.format_p(m.pairwise[0, 1])} {over}"
        pairs = [f"{m.archs[i]} > {m.archs[j]} (p = {stats.format_p(m.pairwise[i, j])})"
                 for i in range(len(m.archs)) for j in range(i + 1, len(m.archs)) if m.pairwise[i, j] < stats.ALPHA]
        out.append(f"{line}; {m.pairwise_test} pairs with p < {stats.ALPHA}: {', '.join(pairs) or 'none'}")
    out += [f"batch size {c.batch}, {n}" for m in (c.accuracy, c.auc) if m.test for n in comparison_notes(m)]
    if c.left_out:
        out.append(f"batch size {c.batch}, left out of the comparison: {'; '.join(c.left_out)}")
    return out


PAIRED_COLUMNS = ("design", "batch", "metric", "test", "n_networks", "n_folds", "friedman_chi2", "friedman_p",
                  "iman_davenport_f", "iman_davenport_p", "critical_difference", "arch_a", "arch_b", "mean_a",
                  "mean_b", "rank_a", "rank_b", "p", "on")


def write_paired_csv(tested: Sequence[Comparison], path):
    """One line per (batch, metric, pair of networks) tested, with the omnibus test of its batch repeated."""
    rows = []
    for comp in tested:
        for c in (comp.accuracy, comp.auc):
            if not c.test:
                continue
            fr = c.friedman
            omnibus = ([fr.statistic, fr.pvalue, fr.iman_davenport, fr.iman_davenport_pvalue, c.cd] if fr
                       else [math.nan] * 5)
            means = c.scores.mean(axis=0)
            for i in range(len(c.archs)):
                for j in range(i + 1, len(c.archs)):
                    rows.append([tables.csv_number(v) for v in (
                        comp.design, comp.batch, c.metric, c.test, len(c.archs), len(c.folds), *map(float, omnibus),
                        c.archs[i], c.archs[j], float(means[i]), float(means[j]), float(c.ranks[i]),
                        float(c.ranks[j]), float(c.pairwise[i, j]), c.on)])
    outputs.write_csv(path, PAIRED_COLUMNS, rows)


@dataclasses.dataclass
class Pooled:
    """The predictions of every ok fold of one (design, batch, arch), concatenated: the held-out test folds'
    where the row is judged on them (`Row.estimate`), else the validation folds'.

    Attributes:
        labels, p_fluid: One entry per validation B-scan and fold.
        folds: Folds whose predictions.csv was read.
        missing: Ok folds without a predictions.csv.
    """

    row: Row
    labels: np.ndarray
    p_fluid: np.ndarray
    folds: List[int]
    missing: List[int]


def pooled_predictions(results: Sequence[dict], logdir, rows: Sequence[Row]) -> List[Pooled]:
    """The predictions of each row's ok runs under LOGDIR's run folders, pooled over folds.

    test_predictions.csv where the row is judged on its test folds, else predictions.csv (validation).

    Raises:
        ValueError: a predictions.csv without the columns label and p_fluid, or with a bad value (names it).
    """
    out = []
    for row in rows:
        labels, scores, found, missing = [], [], [], []
        members = sorted((r for r in results if r.get("status") == "ok" and
                          (r["design"], int(r["batch"]), r["arch"]) == (row.design, row.batch, row.arch)),
                         key=lambda r: int(r["fold"]))
        for r in members:
            name = runs.TEST_PREDICTIONS if row.estimate == "test" else runs.PREDICTIONS
            path = runs.run_of(r).folder(logdir) / name if logdir else None
            if path is None or not path.is_file():
                missing.append(int(r["fold"]))
                continue
            fold_labels, fold_scores = read_predictions(path)
            labels += fold_labels
            scores += fold_scores
            found.append(int(r["fold"]))
        out.append(Pooled(row, np.array(labels, int), np.array(scores, float), found, missing))
    return out


def read_predictions(path) -> Tuple[List[int], List[float]]:
    """(labels, p_fluid) of a run's predictions.csv."""
    path = pathlib.Path(path)
    try:
        columns, lines = outputs.read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    if not {"label", "p_fluid"} <= set(columns):
        raise InputError(f"{path}: not a predictions file (needs the columns label and p_fluid, has "
                         f"{', '.join(columns) or 'none'})")
    labels, scores = [], []
    for number, line in enumerate(lines, 2):
        try:
            labels.append(int(line["label"]))
            scores.append(float(line["p_fluid"]))
        except (TypeError, ValueError, KeyError):
            raise InputError(f"{path}:{number}: bad label or p_fluid ({line.get('label')!r}, "
                             f"{line.get('p_fluid')!r})") from None
    return labels, scores
