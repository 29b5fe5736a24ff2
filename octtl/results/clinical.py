"""The report's answers to a clinical reader: operating points with the two-by-two counts, calibration, reliability.

Per (design, batch, network) and recorded threshold (octtl.training.clinical: 0.5 by the paper's rule, the one
that reached --target_sensitivity on validation, Youden's J there): the mean over folds of sensitivity,
specificity, PPV, NPV and prevalence, the two-by-two counts summed over folds, and a 95% interval of each mean
from a bootstrap over volumes (patients, where the records group them so). Folds are averaged, not pooled: in the
limited design a B-scan is tested in several folds, and a pooled two-by-two would count it several times. A draw
takes as many volumes as were tested, with replacement, each with its rows of every fold it was tested in, and
averages the folds' rates again, each fold at its own threshold. Calibration: the mean over folds of Brier score
and equal-mass ECE, before and after each fold's temperature, and a reliability diagram of the best networks.

Figures come from the test predictions where every run of the row has a held-out test set
(octtl.results.tables.estimate), else from the validation predictions (the thresholds and temperature were then
chosen on the very predictions they are judged on: optimistic, and the page says so). Runs recorded before
these figures existed have them computed from their run folder's predictions files as training would have.
"""

import dataclasses
import html
import pathlib
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.figure import Figure

from octtl import outputs, runs
from octtl.results import comparisons, figures, tables
from octtl.training import calibration, clinical, metrics

DRAWS = 1000  # bootstrap draws per interval (seed 0: a report is reproducible)
RATES = ("sensitivity", "specificity", "ppv", "npv")
RATE_WORDS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV"}
COUNTS = ("tp", "fp", "tn", "fn", "n")
THRESHOLD_WORDS = {"0.5": "0.5 (p > 0.5)", "target_sensitivity": "target sensitivity", "youden": "Youden's J"}
OPERATING_COLUMNS = ("design", "batch", "arch", "threshold", "estimate", "target_sensitivity", "n_folds",
                     "threshold_mean", "threshold_min", "threshold_max", "prevalence_mean",
                     *(f"{rate}_{part}" for rate in RATES for part in ("mean", "ci_low", "ci_high")),
                     *(f"{count}_sum" for count in COUNTS), "n_volumes", "n_bootstrap_folds")
FOLD_COLUMNS = ("design", "batch", "arch", "fold", "test_vendor", "threshold", "side", "value", *COUNTS,
                "prevalence", *RATES, "accuracy")
CALIBRATION_COLUMNS = ("design", "batch", "arch", "estimate", "n_folds", "bins", "val_brier_mean", "val_ece_mean",
                       "brier_mean", "ece_mean", "brier_calibrated_mean", "ece_calibrated_mean", "temperature_mean",
                       "temperature_min", "temperature_max", "n_temperature_at_bound")
OPERATING_NOTE = (
    "Thresholds chosen on each fold's validation predictions and applied to its test predictions: 0.5 calls "
    "p_fluid > 0.5 (the paper's rule, so its accuracy is the tables'); the target-sensitivity threshold is the "
    "highest validation score at which sensitivity reaches the target; Youden's J maximises sensitivity + "
    "specificity - 1 on validation; these two call p_fluid >= threshold. Rates: the mean over folds (a pooled table "
    "would count a B-scan of the limited design once per fold it is tested in) with a 95% percentile interval "
    f"from {DRAWS} bootstrap draws of whole volumes (or patients), each fold at its own threshold; counts: summed "
    "over folds. Prevalence: the share of fluid B-scans in the evaluated sets.")
CALIBRATION_NOTE = (
    "Brier score: mean (p_fluid - label)^2. ECE: expected calibration error over {bins} equal-mass bins of "
    "p_fluid. Temperature scaling (Guo et al. 2017): p_fluid = softmax(log p / T), T fitted on each fold's "
    "validation predictions and applied to its test predictions; it never changes which B-scan scores higher. A "
    "temperature at the search bound (0.01 or 100) means validation could not pin it down (e.g. perfectly "
    "separated).")
VALIDATION_NOTE = ("Scored on the validation predictions that chose the thresholds and the temperature (the runs "
                   "held no test set out): optimistic.")


@dataclasses.dataclass
class Fold:
    """One run's clinical record (recorded, or computed from its predictions) and the evaluated predictions."""

    result: dict
    record: dict
    volumes: Optional[np.ndarray]  # the evaluated side's rows (None: its predictions file is gone)
    labels: Optional[np.ndarray]
    p_fluid: Optional[np.ndarray]


def read_rows(path) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(volume ids, labels, p_fluid) of a run's predictions file, checked as comparisons.read_predictions does."""
    labels, scores = comparisons.read_predictions(path)
    _, lines = outputs.read_csv(path)
    return (np.array([line.get("volume_id") or "" for line in lines], dtype=object), np.array(labels, int),
            np.array(scores, float))


def judge(result: dict, logdir, side: str) -> Optional[Fold]:
    """One ok run's record and its `side` ('test' or 'validation') predictions; None where neither is to be had.

    A result without operating points (written before them) gets them from its predictions files as training
    would have recorded them, at its target sensitivity or the default.
    """
    folder = runs.run_of(result).folder(logdir) if logdir else None
    files = {"validation": runs.PREDICTIONS, "test": runs.TEST_PREDICTIONS}
    read = {}
    for name, file in files.items():
        if folder is not None and (folder / file).is_file():
            read[name] = read_rows(folder / file)
    record = result if "operating_points" in result else None
    if record is None and "validation" in read:
        test = read.get("test")
        record = clinical.record(read["validation"][2], read["validation"][1], None if test is None else test[2],
                                 None if test is None else test[1],
                                 result.get("target_sensitivity", clinical.TARGET_SENSITIVITY))
    if record is None or side not in (record.get("operating_points") or {}):
        return None
    return Fold(result, record, *read.get(side, (None, None, None)))


def _rates(called, labels, fold, k: int) -> Dict[str, np.ndarray]:
    """Per fold (0..k-1) the rates RATES, NaN where a denominator is 0."""
    positive = labels == 1

    def count(mask):
        return np.bincount(fold, weights=mask, minlength=k)

    tp, fp = count(called & positive), count(called & ~positive)
    fn, tn = count(~called & positive), count(~called & ~positive)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
                "npv": tn / (tn + fn)}


def _mean(values) -> float:
    values = [float(v) for v in values if v is not None and v == v]
    return statistics.fmean(values) if values else float("nan")


def operating_rows(design: str, batch: int, arch: str, folds_: Sequence[Fold], side: str) -> List[dict]:
    """OPERATING_COLUMNS of one (design, batch, arch): a row per threshold."""
    out = []
    tested = [f for f in folds_ if f.volumes is not None]
    complete = len(tested) == len(folds_) and tested
    for name in clinical.THRESHOLDS:
        tables_ = [f.record["operating_points"][side].get(name) for f in folds_]
        values = [v for v in (_threshold(f, name) for f in folds_) if v is not None]
        row = {"design": design, "batch": batch, "arch": arch, "threshold": name, "estimate": side,
               "target_sensitivity": "/".join(sorted({f"{f.record.get('target_sensitivity', 0.95):g}"
                                                      for f in folds_})),
               "n_folds": len(folds_), "threshold_mean": _mean(values),
               "threshold_min": min(values, default=float("nan")), "threshold_max": max(values, default=float("nan")),
               "prevalence_mean": _mean(t["prevalence"] for t in tables_ if t),
               **{f"{c}_sum": sum(t[c] for t in tables_ if t) for c in COUNTS},
               "n_volumes": 0, "n_bootstrap_folds": 0}
        for rate in RATES:
            row[f"{rate}_mean"] = _mean(t[rate] for t in tables_ if t)
            row[f"{rate}_ci_low"] = row[f"{rate}_ci_high"] = float("nan")
        usable = [(k, f) for k, f in enumerate(tested) if _threshold(f, name) is not None]
        if complete and usable:
            groups = np.concatenate([f.volumes for _, f in usable])
            labels = np.concatenate([f.labels for _, f in usable])
            fold = np.concatenate([np.full(len(f.labels), k) for k, f in usable])
            called = np.concatenate([f.p_fluid >= (clinical.ABOVE_HALF if name == "0.5" else _threshold(f, name))
                                     for _, f in usable])
            row.update(n_volumes=len(set(groups.tolist())), n_bootstrap_folds=len(usable))
            for rate in RATES:
                interval = metrics.bootstrap_interval(
                    lambda c, y, k, rate=rate: _mean(_rates(c, y, k, len(tested))[rate].tolist()), groups, called,
                    labels, fold, draws=DRAWS, seed=0)
                if interval.low is not None:
                    row[f"{rate}_ci_low"], row[f"{rate}_ci_high"] = interval.low, interval.high
        out.append(row)
    return out


def _threshold(f: Fold, name: str) -> Optional[float]:
    return (f.record.get("thresholds") or {}).get(name)


def fold_rows(design: str, batch: int, arch: str, folds_: Sequence[Fold]) -> List[dict]:
    """FOLD_COLUMNS: each run's two-by-two table at each threshold on validation and (where held out) test."""
    out = []
    for f in sorted(folds_, key=lambda f: int(f.result["fold"])):
        for side, by_name in f.record["operating_points"].items():
            for name, table in by_name.items():
                out.append({"design": design, "batch": batch, "arch": arch, "fold": f.result["fold"],
                            "test_vendor": f.result.get("test_vendor", ""), "threshold": name, "side": side,
                            "value": _threshold(f, name), **(table or {})})
    return out


def calibration_row(design: str, batch: int, arch: str, folds_: Sequence[Fold], side: str) -> dict:
    """CALIBRATION_COLUMNS of one (design, batch, arch)."""
    scores = [f.record.get("calibration") or {} for f in folds_]
    temperatures = [f.record["temperature"] for f in folds_ if f.record.get("temperature") is not None]
    return {"design": design, "batch": batch, "arch": arch, "estimate": side, "n_folds": len(folds_),
            "bins": "/".join(sorted({str(s["bins"]) for s in scores if "bins" in s})),
            "val_brier_mean": _mean(s.get("validation", {}).get("brier") for s in scores),
            "val_ece_mean": _mean(s.get("validation", {}).get("ece") for s in scores),
            **{f"{key}_mean": _mean(s.get(side, {}).get(key) for s in scores)
               for key in ("brier", "ece", "brier_calibrated", "ece_calibrated")},
            "temperature_mean": _mean(temperatures), "temperature_min": min(temperatures, default=float("nan")),
            "temperature_max": max(temperatures, default=float("nan")),
            "n_temperature_at_bound": sum(bool(s.get("temperature_at_bound")) for s in scores)}


@dataclasses.dataclass
class Summary:
    """What the page shows of one design: its rows, where they were scored, and runs left out."""

    operating: List[dict]
    calibration: List[dict]
    side: str
    left_out: List[str]
    reliability: Optional[str] = None  # the figure's file name


def summarize(results: Sequence[dict], logdir, table_rows: Sequence[tables.Row]) -> Dict[str, Tuple]:
    """{design: (Summary, fold rows, {(batch, arch): folds})} of the ok runs of every design."""
    out = {}
    for design in tables.designs(table_rows):
        cells: Dict[tuple, List[dict]] = {}
        for r in results:
            if r["design"] == design and r.get("status") == "ok":
                cells.setdefault((int(r["batch"]), r["arch"]), []).append(r)
        side = tables.estimate([r for members in cells.values() for r in members])
        summary, by_fold, judged = Summary([], [], side, []), [], {}
        for (batch, arch), members in sorted(cells.items()):
            members = sorted(members, key=lambda r: int(r["fold"]))
            folds_ = [judge(r, logdir, side) for r in members]
            missing = [str(r["fold"]) for r, f in zip(members, folds_) if f is None]
            if missing:
                summary.left_out.append(f"{arch} batch {batch}: folds {', '.join(missing)} record no operating "
                                        "points and their predictions files are gone")
            folds_ = [f for f in folds_ if f is not None]
            if not folds_:
                continue
            judged[(batch, arch)] = folds_
            summary.operating += operating_rows(design, batch, arch, folds_, side)
            summary.calibration.append(calibration_row(design, batch, arch, folds_, side))
            by_fold += fold_rows(design, batch, arch, folds_)
        if judged:
            out[design] = (summary, by_fold, judged)
    return out


def reliability_figure(judged: Dict[tuple, List[Fold]], best: Sequence[tables.Row], title: str) -> Figure:
    """Reliability diagram of the best networks: evaluated predictions pooled over folds, before (solid) and after
    (dashed) each fold's temperature, in equal-mass bins; the diagonal is perfect calibration."""
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    for i, row in enumerate(best):
        folds_ = [f for f in judged.get((row.batch, row.arch), [])
                  if f.p_fluid is not None and f.record.get("temperature") is not None]
        if not folds_:
            continue
        labels = np.concatenate([f.labels for f in folds_])
        before = np.concatenate([f.p_fluid for f in folds_])
        after = np.concatenate([calibration.apply_temperature(f.p_fluid, f.record["temperature"]) for f in folds_])
        for p, style, when in ((before, "o-", "as trained"), (after, "s--", "temperature-scaled")):
            bins = calibration.reliability(p, labels, clinical.CALIBRATION_BINS)
            ece = calibration.ece(p, labels, clinical.CALIBRATION_BINS)
            ax.plot(bins["mean_predicted"], bins["observed"], style, color=f"C{i}", markersize=4, linewidth=1.2,
                    label=f"{row.arch}, batch {row.batch}, {when}: ECE {ece:.3f}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("mean predicted p_fluid in the bin")
    ax.set_ylabel("share of fluid B-scans in the bin")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6.5, loc="upper left")
    return fig


def write(results: Sequence[dict], out_dir, logdir, table_rows: Sequence[tables.Row], k: int = 3):
    """operating_points_{design}.csv, operating_points_folds_{design}.csv, calibration_{design}.csv and
    reliability_{design}.png of every design whose runs have operating points.

    Returns:
        (the paths written, {design: Summary} for the page).
    """
    out_dir = pathlib.Path(out_dir)
    written, summaries = [], {}
    for design, (summary, by_fold, judged) in summarize(results, logdir, table_rows).items():
        for name, columns, rows in ((f"operating_points_{design}.csv", OPERATING_COLUMNS, summary.operating),
                                    (f"operating_points_folds_{design}.csv", FOLD_COLUMNS, by_fold),
                                    (f"calibration_{design}.csv", CALIBRATION_COLUMNS, summary.calibration)):
            outputs.write_csv(out_dir / name, columns, ([tables.csv_number(row.get(c, "")) for c in columns]
                                                        for row in rows))
            written.append(out_dir / name)
        best = tables.roc_rows(table_rows, design, k)
        if any(f.p_fluid is not None for row in best for f in judged.get((row.batch, row.arch), [])):
            summary.reliability = f"reliability_{design}.png"
            label = tables.design_label(table_rows, design)
            figures.save(reliability_figure(judged, best, f"Reliability, {summary.side} predictions pooled over "
                                                          f"folds,\n{label}"), out_dir / summary.reliability)
            written.append(out_dir / summary.reliability)
        summaries[design] = summary
    return written, summaries


def _cell(mean: float, low: float = float("nan"), high: float = float("nan")) -> str:
    if mean != mean:
        return "-"
    return f"{mean:.3f}" + ("" if low != low else f" [{low:.3f}, {high:.3f}]")


def section(summaries: Dict[str, Summary], images: dict, figure_html, table_rows: Sequence[tables.Row]) -> List[str]:
    """The page's operating points and calibration: per design a table of each, notes and the reliability diagram."""
    if not summaries:
        return []
    esc = html.escape
    parts = ["<h2>Operating points and calibration</h2>", f'<p class="method">{esc(OPERATING_NOTE)}</p>']
    for design, s in summaries.items():
        parts.append(f"<h3>{esc(tables.design_label(table_rows, design).capitalize())}: operating points on the "
                     f"{s.side} predictions (<a href=\"operating_points_{design}.csv\">operating_points_{design}.csv"
                     f"</a>, per run: <a href=\"operating_points_folds_{design}.csv\">operating_points_folds_{design}"
                     ".csv</a>)</h3>")
        if s.side != "test":
            parts.append(f'<p class="note">{esc(VALIDATION_NOTE)}</p>')
        head = ("Network", "Batch", "Threshold", "Value (min-max)", "Folds", *(RATE_WORDS[r] + " [95% CI]"
                                                                             for r in RATES),
                "Prevalence", "TP / FP / TN / FN (all folds)")
        out = ['<table class="operating">', "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
        for r in s.operating:
            words = THRESHOLD_WORDS[r["threshold"]] + (f" {r['target_sensitivity']}" if r["threshold"] ==
                                                       "target_sensitivity" else "")
            value = "-" if r["threshold_mean"] != r["threshold_mean"] else (
                f"{r['threshold_mean']:.3f} ({r['threshold_min']:.3f}-{r['threshold_max']:.3f})")
            cells = [r["arch"], str(r["batch"]), words, value, str(r["n_folds"]),
                     *(_cell(r[f"{rate}_mean"], r[f"{rate}_ci_low"], r[f"{rate}_ci_high"]) for rate in RATES),
                     _cell(r["prevalence_mean"]), " / ".join(str(r[f"{c}_sum"]) for c in ("tp", "fp", "tn", "fn"))]
            out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
        parts.append("\n".join(out))
        bins = "/".join(sorted({r["bins"] for r in s.calibration}))
        parts.append(f"<h4>Calibration on the {s.side} predictions (<a href=\"calibration_{design}.csv\">"
                     f"calibration_{design}.csv</a>)</h4>")
        parts.append(f'<p class="method">{esc(CALIBRATION_NOTE.format(bins=bins))}</p>')
        # Test: validation beside test before and after T; without a test set the validation figures once.
        keys = (("val_brier_mean", "Validation Brier"), ("val_ece_mean", "Validation ECE"))
        keys += (("brier_mean", "Test Brier"), ("ece_mean", "Test ECE")) if s.side == "test" else ()
        keys += (("brier_calibrated_mean", f"{s.side.capitalize()} Brier after T"),
                 ("ece_calibrated_mean", f"{s.side.capitalize()} ECE after T"))
        head = ("Network", "Batch", "Folds", *(words for _, words in keys), "Temperature T (min-max)")
        out = ['<table class="calibration">', "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
        for r in s.calibration:
            bound = f", {r['n_temperature_at_bound']} at a bound" if r["n_temperature_at_bound"] else ""
            cells = [r["arch"], str(r["batch"]), str(r["n_folds"]), *(_cell(r[key]) for key, _ in keys),
                     f"{r['temperature_mean']:.3g} ({r['temperature_min']:.3g}-{r['temperature_max']:.3g}){bound}"]
            out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
        out.append("</table>")
        parts.append("\n".join(out))
        parts += [f'<p class="note">{esc(line)}</p>' for line in s.left_out]
        if s.reliability and s.reliability in images:
            parts.append(figure_html(s.reliability, images[s.reliability], (
                f"Reliability diagram, {tables.design_label(table_rows, design)}: the best networks' {s.side} "
                f"predictions pooled over folds in {clinical.CALIBRATION_BINS} equal-mass bins, as trained (solid) "
                "and temperature-scaled with each fold's validation temperature (dashed); on the diagonal, a "
                "predicted 0.9 is fluid 9 times in 10.")))
    return parts
