"""Tables II-III from run results: mean (standard deviation) over folds per design, batch size and network.

The paper reports each (batch size, network) as "mean (std)" across ten folds; MATLAB's `std` is the sample
standard deviation (ddof=1), used here too. Beyond the paper, each mean has a 95% confidence interval (the
Nadeau-Bengio corrected resampled t interval, octtl.results.stats), and the networks of each (design, batch) are
compared fold by fold (octtl.results.comparisons) where their folds are the same splits. Failed runs (`status` other than
'ok') are counted and listed, never averaged; a (batch, network) with fewer ok folds than the runs asked for is
marked.

Runs with a held-out test fold (octtl.data.folds.splits) also carry test figures: the chosen checkpoint scored on
data that neither trained it nor chose it. The tables then show them beside the paper's validation figures, and
the intervals, the ranks and the paired comparisons use them (`estimate`): picking the best check and scoring it
on the same fold is optimistic, by an amount no interval accounts for.
"""

import collections
import dataclasses
import html
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

from octtl import outputs, protocol
from octtl.results import stats

DESIGNS = ("baseline", "limited")  # the paper's order
TABLE_NUMBERS = {"baseline": "II", "limited": "III"}
# The columns the issue names first, then the extras.
COLUMNS = ("design", "batch", "arch", "accuracy_mean", "accuracy_std", "auc_mean", "auc_std",
           "iterations_to_best_mean", "n_folds", "iterations_to_best_std", "folds", "n_failed", "n_auc", "rank",
           "params", "wall_seconds_mean", "accuracy_ci_low", "accuracy_ci_high", "auc_ci_low", "auc_ci_high",
           "test_train_ratio", "test_accuracy_mean", "test_accuracy_std", "test_auc_mean", "test_auc_std",
           "n_test", "n_test_auc", "estimate")
# Which result.json fields each estimate reads: the paper's (best check, scored where it was chosen) or the
# held-out test fold's.
ESTIMATES = {"validation": ("best_accuracy", "best_auc", "val_size"), "test": ("test_accuracy", "test_auc", "test_size")}
INCOMPLETE = "†"
# The paper's columns, each mean followed by its interval.
TOP_COLUMNS = ("Batch size", "Architecture", "Accuracy", "Accuracy 95% CI", "AUC", "AUC 95% CI")
ALL_COLUMNS = TOP_COLUMNS + ("Iterations to best", "Folds")
# With a held-out test fold: the paper's validation figures, then the test figures with their intervals.
TEST_TOP_COLUMNS = ("Batch size", "Architecture", "Validation accuracy", "Validation AUC", "Test accuracy",
                    "Test accuracy 95% CI", "Test AUC", "Test AUC 95% CI")
TEST_ALL_COLUMNS = TEST_TOP_COLUMNS + ("Iterations to best", "Folds")
INTERVAL_NOTE = ("95% CI: corrected resampled t interval of Nadeau and Bengio (2003), mean ± t(k-1) · s · "
                 "sqrt(1/k + n_val/n_train) over k folds, clipped to [0, 1]. Folds share training data (and, in "
                 "the limited design, validation data), so they are not independent and the plain t interval "
                 "would be too narrow.")
TEST_NOTE = ("Validation: the paper's figures, the best check scored on the fold that chose it (optimistic). "
             "Test: that checkpoint scored once on a held-out fold that neither trained nor chose it; the "
             "intervals, ranks and paired tests are the test figures', with n_test/n_train in the correction.")


@dataclasses.dataclass
class Row:
    """One (design, batch, network) of a table: statistics over its ok folds.

    Attributes:
        n_folds: Folds with status 'ok' (the ones averaged).
        folds: Folds the runs were asked to split into (result.json's `folds`).
        n_failed: Folds with a failed result.
        n_auc: Folds whose AUC is defined (both classes in the validation set).
        rank: Place by mean accuracy among the networks of this design and batch size (1 = best).
        params: Parameters of the trained network.
        accuracy_ci_low, accuracy_ci_high, auc_ci_low, auc_ci_high: 95% interval of the mean (Nadeau-Bengio).
        test_train_ratio: Evaluated over training examples of a fold (from result.json's sizes, else the
            design's), the correction's n_test/n_train.
        test_accuracy_mean, test_accuracy_std, test_auc_mean, test_auc_std: Over the folds' held-out test folds.
        n_test, n_test_auc: Folds with a test accuracy, and with a defined test AUC.
        estimate: 'test' when every ok fold has test figures (the intervals and ranks are theirs), else
            'validation' (the paper's).
    """

    design: str
    batch: int
    arch: str
    accuracy_mean: float
    accuracy_std: float
    auc_mean: float
    auc_std: float
    iterations_to_best_mean: float
    n_folds: int
    iterations_to_best_std: float
    folds: int
    n_failed: int
    n_auc: int
    rank: int
    params: float
    wall_seconds_mean: float
    accuracy_ci_low: float = math.nan
    accuracy_ci_high: float = math.nan
    auc_ci_low: float = math.nan
    auc_ci_high: float = math.nan
    test_train_ratio: float = math.nan
    test_accuracy_mean: float = math.nan
    test_accuracy_std: float = math.nan
    test_auc_mean: float = math.nan
    test_auc_std: float = math.nan
    n_test: int = 0
    n_test_auc: int = 0
    estimate: str = "validation"

    @property
    def estimated_accuracy(self) -> float:
        """The mean accuracy the row is ranked and judged by: the test fold's where there is one."""
        return self.test_accuracy_mean if self.estimate == "test" else self.accuracy_mean

    @property
    def estimated_auc(self) -> float:
        """The mean AUC the row is judged by: the test fold's where there is one."""
        return self.test_auc_mean if self.estimate == "test" else self.auc_mean

    @property
    def complete(self) -> bool:
        """Whether as many folds finished ok as the runs were asked to split into."""
        return self.n_folds >= self.folds


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); NaN where undefined (no values, or one for the std)."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def aggregate(results: Sequence[dict]) -> Tuple[List[Row], List[dict]]:
    """Rows of every (design, batch, arch), ranked within (design, batch); and the failed results.

    Returns:
        (rows sorted by design, batch and rank; failed results sorted by run).
    """
    groups: Dict[tuple, List[dict]] = {}
    for r in results:
        groups.setdefault((r["design"], int(r["batch"]), r["arch"]), []).append(r)
    rows = []
    for (design, batch, arch), members in groups.items():
        ok = [r for r in members if r.get("status") == "ok"]
        aucs = [r["best_auc"] for r in ok if r.get("best_auc") is not None]
        acc = mean_std([r["best_accuracy"] for r in ok])
        auc = mean_std(aucs)
        test_accs = [r["test_accuracy"] for r in ok if r.get("test_accuracy") is not None]
        test_aucs = [r["test_auc"] for r in ok if r.get("test_auc") is not None]
        its = mean_std([r["iterations_to_best"] for r in ok])
        params = [r["params"] for r in ok if r.get("params") is not None]
        walls = [r["wall_seconds"] for r in ok if r.get("wall_seconds") is not None]
        # The vendor design's folds are its vendors (design_folds); --folds split the other vendors' volumes.
        folds = max(int(r.get("design_folds", r.get("folds", len(members)))) for r in members)
        kind = estimate(ok)
        accuracy_field, auc_field, _ = ESTIMATES[kind]
        judged_aucs = [r[auc_field] for r in ok if r.get(auc_field) is not None]
        ratio = test_train_ratio(ok, design, folds, kind)
        rows.append(Row(design, batch, arch, acc[0], acc[1], auc[0], auc[1], its[0], len(ok), its[1],
                        folds, len(members) - len(ok),
                        len(aucs), 0, round(statistics.fmean(params)) if params else math.nan,
                        statistics.fmean(walls) if walls else math.nan,
                        *stats.corrected_interval([r[accuracy_field] for r in ok], ratio, bounds=(0, 1)),
                        *stats.corrected_interval(judged_aucs, ratio, bounds=(0, 1)), ratio,
                        *mean_std(test_accs), *mean_std(test_aucs), len(test_accs), len(test_aucs), kind))
    rows.sort(key=_order)
    for key in {(r.design, r.batch) for r in rows}:
        for rank, row in enumerate([r for r in rows if (r.design, r.batch) == key], 1):
            row.rank = rank
    failed = sorted((r for r in results if r.get("status") != "ok"),
                    key=lambda r: (r["design"], int(r["batch"]), r["arch"], int(r["fold"])))
    return rows, failed


def estimate(results: Sequence[dict]) -> str:
    """'test' when every result has a held-out test fold's figures, else 'validation' (the paper's)."""
    return "test" if results and all(r.get("test_accuracy") is not None for r in results) else "validation"


def test_train_ratio(ok: Sequence[dict], design: str, folds: int, kind: str = "validation") -> float:
    """n_test/n_train of a (design, batch, arch): mean evaluated over mean training size of its ok folds.

    The evaluated set is the validation fold, or the test fold where `kind` is 'test'. Results without the sizes
    (written by hand, or before result.json had them) fall back to the design's k-fold ratio, 1/(k-1) for
    baseline and k-1 for limited.
    """
    size = ESTIMATES[kind][2]
    sized = [r for r in ok if r.get("train_size") and r.get(size) is not None]
    if sized:
        return statistics.fmean(r[size] for r in sized) / statistics.fmean(r["train_size"] for r in sized)
    return stats.test_train_ratio(design, folds)


def _order(row: Row):
    # Best mean accuracy first, then AUC (on the test fold where there is one); networks without an ok fold
    # last; ties by name.
    acc = -row.estimated_accuracy if not math.isnan(row.estimated_accuracy) else math.inf
    auc = -row.estimated_auc if not math.isnan(row.estimated_auc) else math.inf
    return row.design, row.batch, acc, auc, row.arch


def designs(rows: Sequence[Row]) -> List[str]:
    """Designs present, the paper's order first."""
    present = {r.design for r in rows}
    return [d for d in DESIGNS if d in present] + sorted(present - set(DESIGNS))


def folds_of(rows: Sequence[Row], design: str) -> int:
    """Folds the design's runs were asked for (10 in the paper)."""
    return max((r.folds for r in rows if r.design == design), default=0)


def design_label(rows: Sequence[Row], design: str) -> str:
    """'baseline design (train set = 90%)' as the paper names it, with the share the folds give."""
    folds = folds_of(rows, design)
    if design == protocol.VENDOR:
        return "leave-one-vendor-out design (test set = one vendor)"
    if design not in DESIGNS or not folds:
        return f"{design} design"
    share = (folds - 1) / folds if design == "baseline" else 1 / folds
    name = "baseline design" if design == "baseline" else "limited-data design"
    return f"{name} (train set = {100 * share:.0f}%)"


def cell(mean: float, std: float, digits: int = 2) -> str:
    """'0.80 (0.06)' as in Tables II-III; 'n/a' for an undefined part, '-' when there is no value at all."""
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f} ({'n/a' if math.isnan(std) else f'{std:.{digits}f}'})"


def interval(low: float, high: float, digits: int = 2) -> str:
    """'[0.75, 0.85]'; 'n/a' where undefined (one fold)."""
    if math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def display(row: Row) -> Dict[str, str]:
    """A row's cells as printed in the markdown and HTML tables."""
    mark = "" if row.complete else f" {INCOMPLETE}"
    accuracy_ci = interval(row.accuracy_ci_low, row.accuracy_ci_high) if row.n_folds else "-"
    auc_ci = interval(row.auc_ci_low, row.auc_ci_high) if (row.n_test_auc if row.estimate == "test" else
                                                           row.n_auc) else "-"
    tested = row.estimate == "test"
    cells = {
        "Batch size": str(row.batch),
        "Architecture": row.arch,
        "Accuracy": cell(row.accuracy_mean, row.accuracy_std) + mark,
        "AUC": cell(row.auc_mean, row.auc_std) + mark,
        "Accuracy 95% CI": accuracy_ci if not tested else "-",
        "AUC 95% CI": auc_ci if not tested else "-",
        "Validation accuracy": cell(row.accuracy_mean, row.accuracy_std) + mark,
        "Validation AUC": cell(row.auc_mean, row.auc_std) + mark,
        "Test accuracy": cell(row.test_accuracy_mean, row.test_accuracy_std) + mark,
        "Test AUC": cell(row.test_auc_mean, row.test_auc_std) + mark,
        "Test accuracy 95% CI": accuracy_ci if tested else "-",
        "Test AUC 95% CI": auc_ci if tested else "-",
        "Iterations to best": cell(row.iterations_to_best_mean, row.iterations_to_best_std, 0),
        "Folds": f"{row.n_folds} of {row.folds}" + (f", {row.n_failed} failed" if row.n_failed else ""),
    }
    # K-class runs' AUC is the macro one-vs-rest AUC, and is named so (`columns(..., macro=True)`).
    return {**cells, **{key.replace("AUC", "macro AUC"): value for key, value in cells.items() if "AUC" in key}}


def columns(rows: Sequence[Row], top: bool, macro: bool = False) -> Tuple[str, ...]:
    """The columns of a design's table: the paper's, or validation beside test where every row has test figures;
    with `macro` (K-class runs) the AUC columns say it is the macro AUC."""
    tested = bool(rows) and all(r.estimate == "test" for r in rows if r.n_folds)
    if tested:
        chosen = TEST_TOP_COLUMNS if top else TEST_ALL_COLUMNS
    else:
        chosen = TOP_COLUMNS if top else ALL_COLUMNS
    return tuple(c.replace("AUC", "macro AUC") for c in chosen) if macro else chosen


def top(rows: Sequence[Row], design: str, k: int = 3) -> List[Row]:
    """The k best networks of each batch size of a design, with at least one ok fold (Table II's layout)."""
    return [r for r in rows if r.design == design and r.rank <= k and r.n_folds > 0]


def title(design: str, rows: Sequence[Row], what: str) -> str:
    """The heading of a design's table, numbered as in the paper (Table II baseline, III limited)."""
    number = TABLE_NUMBERS.get(design, "")
    return (f"Table {number}{' - ' if number else ''}mean (standard deviation) accuracy, AUC of {what} across "
            f"{folds_of(rows, design)} folds of the {design_label(rows, design)}")


def csv_number(value) -> str:
    """A value as the CSV files write it: floats at full precision (repr round-trips them), empty for NaN."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return str(value)


def write_csv(rows: Sequence[Row], path):
    """One line per (batch, arch) of the rows, columns `COLUMNS`, numbers at full precision."""
    outputs.write_csv(path, COLUMNS, ([csv_number(getattr(row, c)) for c in COLUMNS] for row in rows))


def markdown_table(rows: Sequence[Row], columns: Sequence[str], group_batches: bool) -> List[str]:
    """The lines of a markdown table of the rows' `display` cells; with group_batches each batch size shows once."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    previous = None
    for row in rows:
        cells = display(row)
        if group_batches and row.batch == previous:
            cells["Batch size"] = ""  # the paper prints each batch size once
        previous = row.batch
        lines.append("| " + " | ".join(cells[c] for c in columns) + " |")
    return lines


def notes(design: str, rows: Sequence[Row], failed: Sequence[dict]) -> List[str]:
    """Footnotes of a design's tables: incomplete (batch, arch) and failed runs."""
    out = []
    incomplete = [r for r in rows if r.design == design and not r.complete]
    if incomplete:
        out.append(f"{INCOMPLETE} fewer folds than asked: " + "; ".join(
            f"{r.arch} batch {r.batch}: {r.n_folds} of {r.folds}" for r in incomplete))
    undefined_auc = [r for r in rows if r.design == design and r.n_auc < r.n_folds]
    if undefined_auc:
        out.append("AUC undefined (one class in the validation set) in some folds, averaged over the rest: "
                   + "; ".join(f"{r.arch} batch {r.batch}: {r.n_auc} of {r.n_folds}" for r in undefined_auc))
    mine = [r for r in failed if r["design"] == design]
    if mine:
        out.append(f"failed runs (not averaged): {len(mine)}")
    return out


def failed_lines(design: str, failed: Sequence[dict]) -> List[str]:
    """One line per failed run of the design: network, batch, fold and the error."""
    return [f"{r['arch']} batch {r['batch']} fold {r['fold']}: {r.get('error', 'failed')}"
            for r in failed if r["design"] == design]


def html_table(rows: Sequence[Row], columns: Sequence[str], group_batches: bool) -> str:
    """The same table as `markdown_table`'s, as an HTML <table>; batch sizes span their rows."""
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr>"]
    spans: Dict[int, int] = {}
    for row in rows:
        spans[row.batch] = spans.get(row.batch, 0) + 1
    previous: Optional[int] = None
    for row in rows:
        cells = display(row)
        tds = []
        for c in columns:
            if c == "Batch size" and group_batches:
                if row.batch == previous:
                    continue
                tds.append(f'<td rowspan="{spans[row.batch]}" class="batch">{row.batch}</td>')
            else:
                cls = ' class="incomplete"' if INCOMPLETE in cells[c] and "9" not in c and c not in (
                    "Batch size", "Architecture", "Iterations to best", "Folds") else ""
                tds.append(f"<td{cls}>{html.escape(cells[c])}</td>")
        previous = row.batch
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def accuracy_curves(results: Sequence[dict]) -> Dict[tuple, List[Tuple[int, float, int]]]:
    """Mean validation accuracy across folds at each evaluated iteration, per (design, batch, arch).

    Folds stop early at different iterations; each point averages the ok folds evaluated there.

    Returns:
        {(design, batch, arch): [(iteration, mean accuracy, folds averaged), ...] by iteration}.
    """
    points: Dict[tuple, Dict[int, List[float]]] = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        curve = points.setdefault((r["design"], int(r["batch"]), r["arch"]), {})
        for check in r.get("checks") or []:
            curve.setdefault(int(check["iteration"]), []).append(float(check["val_accuracy"]))
    return {key: [(it, statistics.fmean(v), len(v)) for it, v in sorted(curve.items())]
            for key, curve in points.items()}


def settings(results: Sequence[dict],
             keys=("weights", "image_size", "lr", "momentum", "preprocess", "crop", "seed", "group_by_volume",
                   "augment", "augment_strength", "denoise", "denoise_strength", "data_dir")) -> Dict[str, List[str]]:
    """The distinct values of the training settings across results (a report should not mix them unawares)."""
    out = {}
    for key in keys:
        values = sorted({str(r[key]) for r in results if key in r})
        if values:
            out[key] = values
    return out


def grouping(results: Sequence[dict], design: str) -> str:
    """Whether a design's folds kept each volume on one side of every split, as a sentence for the page."""
    values = collections.Counter(r.get("group_by_volume") for r in results if r["design"] == design)
    if set(values) == {True}:
        return ("Folds grouped by volume: yes. All B-scans of a volume (one eye of one patient) are on the same "
                "side of every split.")
    if set(values) == {False}:
        return ("Folds grouped by volume: no. As in the paper, B-scans of one volume are spread over training and "
                "validation; neighbouring B-scans are near-duplicates, so validation scores are optimistic "
                "(octtl.train --group_by_volume keeps volumes whole).")
    if set(values) == {None}:
        return "Folds grouped by volume: not recorded in result.json."
    counts = ", ".join(f"{values[v]} runs {'yes' if v else 'no' if v is False else 'not recorded'}"
                       for v in (True, False, None) if values[v])
    return (f"Folds grouped by volume: mixed ({counts}); runs grouped differently from the others of their batch "
            "size are left out of the paired comparisons.")


def roc_rows(rows: Sequence[Row], design: str, k: int = 3) -> List[Row]:
    """The k best (batch, network) of a design by mean accuracy, each network once (at its best batch size)."""
    out, seen = [], set()
    for row in sorted((r for r in rows if r.design == design and r.n_folds), key=_order_across_batches):
        if row.arch not in seen:
            seen.add(row.arch)
            out.append(row)
    return out[:k]


def _order_across_batches(row: Row):
    design, batch, acc, auc, arch = _order(row)
    return acc, auc, arch, batch
