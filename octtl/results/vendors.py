"""Another scanner: what a network scores on a vendor it never saw, beside what it scores on that vendor when the
vendor's other volumes trained it.

The vendor design (octtl.data.folds.vendor_splits) holds each vendor out in turn: its run's test figures are the
left-out vendor's. The within-vendor figures come from the same network and batch size in a design of grouped
folds (baseline first) on the same records, whose runs record their test scores per vendor
(`test_by_vendor`, octtl.training.clinical): each fold's test volumes of that vendor, the vendor's other volumes
having been in training, averaged over folds. The difference is what leaving the vendor out costs. Intervals of
the left-out vendor's accuracy and AUC: percentile bootstrap over its volumes (test_predictions.csv).
"""

import html
import statistics
from typing import List, Sequence

import numpy as np

from octtl import outputs, protocol, runs
from octtl.results import clinical, tables
from octtl.training import metrics

COLUMNS = ("batch", "arch", "vendor", "train_vendors", "n_test", "n_volumes", "accuracy", "accuracy_ci_low",
           "accuracy_ci_high", "auc", "auc_ci_low", "auc_ci_high", "target_sensitivity", "threshold",
           "sensitivity", "specificity", "ece", "ece_calibrated", "within_design", "within_folds",
           "within_accuracy", "within_auc", "accuracy_change", "auc_change")
NOTE = (
    "Each row: a network trained on the other vendors (a grouped fold of their volumes chose its checkpoint, "
    "thresholds and temperature), scored once on every B-scan of the vendor it never saw; accuracy by the paper's "
    "rule (p_fluid > 0.5), with 95% intervals from {draws} bootstrap draws of that vendor's volumes; sensitivity "
    "and specificity at the threshold chosen on the other vendors' validation fold for the target sensitivity. "
    "Within-vendor: the same network and batch size in the {design} design on the same records, scored on that "
    "vendor's test B-scans of each fold (its other volumes trained the network), mean over folds. Change: left "
    "out minus within.")


def _mean(values) -> float:
    values = [float(v) for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def rows(results: Sequence[dict], logdir) -> List[dict]:
    """COLUMNS of every ok run of the vendor design, by batch, network and left-out vendor."""
    ok = [r for r in results if r.get("status") == "ok"]
    within = [r for r in ok if r["design"] != protocol.VENDOR and r.get("test_by_vendor")]
    out = []
    for r in sorted((r for r in ok if r["design"] == protocol.VENDOR and r.get("test_vendor")),
                    key=lambda r: (int(r["batch"]), r["arch"], r["test_vendor"])):
        vendor = r["test_vendor"]
        target = (r.get("operating_points", {}).get("test") or {}).get("target_sensitivity") or {}
        test = (r.get("calibration") or {}).get("test") or {}
        row = {"batch": int(r["batch"]), "arch": r["arch"], "vendor": vendor,
               "train_vendors": "+".join(r.get("train_vendors", [])), "n_test": r.get("test_size"),
               "n_volumes": "", "accuracy": r.get("test_accuracy"), "auc": r.get("test_auc"),
               "target_sensitivity": r.get("target_sensitivity", ""),
               "threshold": (r.get("thresholds") or {}).get("target_sensitivity"),
               "sensitivity": target.get("sensitivity"), "specificity": target.get("specificity"),
               "ece": test.get("ece"), "ece_calibrated": test.get("ece_calibrated")}
        for name in ("accuracy", "auc"):
            row[f"{name}_ci_low"] = row[f"{name}_ci_high"] = float("nan")
        path = runs.run_of(r).folder(logdir) / runs.TEST_PREDICTIONS if logdir else None
        if path is not None and path.is_file():
            volumes, labels, p = clinical.read_rows(path)
            row["n_volumes"] = len(set(volumes.tolist()))
            for name, statistic in (("accuracy", lambda y, s: float(np.mean((s > 0.5) == y))),
                                    ("auc", lambda y, s: metrics.auc(s, y))):
                interval = metrics.bootstrap_interval(statistic, volumes, labels, p, draws=clinical.DRAWS, seed=0)
                if interval.low is not None:
                    row[f"{name}_ci_low"], row[f"{name}_ci_high"] = interval.low, interval.high
        mates = [w for w in within if (int(w["batch"]), w["arch"]) == (row["batch"], row["arch"])
                 and w.get("data") == r.get("data") and vendor in w["test_by_vendor"]]
        designs = sorted({w["design"] for w in mates}, key=lambda d: (d != "baseline", d))
        row.update(within_design="", within_folds=0, within_accuracy=float("nan"), within_auc=float("nan"))
        if designs:
            mine = [w["test_by_vendor"][vendor] for w in mates if w["design"] == designs[0]]
            row.update(within_design=designs[0], within_folds=len(mine),
                       within_accuracy=_mean(m["accuracy"] for m in mine), within_auc=_mean(m["auc"] for m in mine))
        row["accuracy_change"] = _difference(row["accuracy"], row["within_accuracy"])
        row["auc_change"] = _difference(row["auc"], row["within_auc"])
        out.append(row)
    return out


def _difference(a, b) -> float:
    return float("nan") if a is None or b is None or b != b else float(a) - float(b)


def write(rows_: Sequence[dict], path):
    """vendors.csv: one line per left-out vendor of each network and batch size."""
    outputs.write_csv(path, COLUMNS, ([tables.csv_number(row[c]) if row[c] is not None else "" for c in COLUMNS]
                                      for row in rows_))


def _number(value, low=float("nan"), high=float("nan"), signed=False) -> str:
    if value is None or value != value:
        return "-"
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    return text + ("" if low != low else f" [{low:.3f}, {high:.3f}]")


def section(rows_: Sequence[dict]) -> List[str]:
    """The page's leave-one-vendor-out table, with how to read it."""
    if not rows_:
        return []
    esc = html.escape
    design = next((r["within_design"] for r in rows_ if r["within_design"]), "baseline")
    parts = ['<h2>Another scanner: each vendor left out (<a href="vendors.csv">vendors.csv</a>)</h2>',
             f'<p class="method">{esc(NOTE.format(draws=clinical.DRAWS, design=design))}</p>']
    head = ("Network", "Batch", "Left-out vendor (trained on)", "Test B-scans (volumes)", "Accuracy [95% CI]",
            "AUC [95% CI]", "Sensitivity / specificity at the target threshold", "ECE (after T)",
            "Within-vendor accuracy / AUC (folds)", "Change: accuracy / AUC")
    out = ['<table class="vendors">', "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for r in rows_:
        within = ("-" if not r["within_design"] else
                  f"{_number(r['within_accuracy'])} / {_number(r['within_auc'])} ({r['within_folds']})")
        at = (f"{_number(r['sensitivity'])} / {_number(r['specificity'])}"
              + (f" (target {r['target_sensitivity']:g}, p >= {r['threshold']:.3f})" if r["threshold"] is not None
                 and r["target_sensitivity"] != "" else ""))
        cells = [r["arch"], str(r["batch"]), f"{r['vendor']} ({r['train_vendors'].replace('+', ', ')})",
                 f"{r['n_test']} ({r['n_volumes'] or '-'})",
                 _number(r["accuracy"], r["accuracy_ci_low"], r["accuracy_ci_high"]),
                 _number(r["auc"], r["auc_ci_low"], r["auc_ci_high"]), at,
                 f"{_number(r['ece'])} ({_number(r['ece_calibrated'])})", within,
                 f"{_number(r['accuracy_change'], signed=True)} / {_number(r['auc_change'], signed=True)}"]
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    parts.append("\n".join(out))
    if not any(r["within_design"] for r in rows_):
        parts.append('<p class="note">No within-vendor figures: train the baseline design on the same records '
                     "(its runs record their test scores per vendor) to see what leaving a vendor out costs.</p>")
    return parts
