"""The report's fluid types (--task=fluid_types): IRF, SRF and PED per B-scan, and per volume as RETOUCH scored them.

Per B-scan: each type's accuracy and AUC, mean over folds (the held-out test folds' where every run has them).
Per volume (Bogunovic et al. 2019): a volume has a type when any of its B-scans does, and its score is the
highest probability of that type among its B-scans. A fold holds few volumes, rarely with both answers, so the
per-volume AUC is computed on the out-of-fold scores pooled over the folds, each volume scored once (the test
folds of the baseline design, else its validation folds), and per vendor: the maximum over B-scans grows with
their number, so vendors with 49 and 128 B-scans are not mixed. Undefined where a vendor's volumes hold one
answer only.
"""

import html
import statistics
from typing import Dict, List, Sequence

import numpy as np

from octtl import outputs, runs
from octtl.training import metrics

COLUMNS = ("design", "batch", "arch", "type", "on", "folds", "bscan_accuracy", "bscan_auc", "bscan_auc_std",
           "vendor", "volumes", "volumes_with_type", "volume_auc")


def grouped(results: Sequence[dict]) -> Dict[tuple, List[dict]]:
    """The ok fluid-types runs by (design, batch, arch)."""
    out: Dict[tuple, List[dict]] = {}
    for r in results:
        if r.get("status") == "ok" and r.get("task") == "fluid_types":
            out.setdefault((r["design"], int(r["batch"]), r["arch"]), []).append(r)
    return out


def pooled_volumes(members: Sequence[dict], logdir, on: str):
    """(volume ids, vendors, (V, 3) highest probabilities, (V, 3) answers) from the runs' prediction files.

    Each volume is taken once: the first fold that scored it (in the baseline design the test folds, or the
    validation folds, partition the volumes).
    """
    name = runs.TEST_PREDICTIONS if on == "test" else runs.PREDICTIONS
    seen, rows = set(), []
    for r in sorted(members, key=lambda r: int(r["fold"])):
        path = runs.run_of(r).folder(logdir) / name
        if not path.is_file():
            continue
        _, fold_rows = outputs.read_csv(path)
        fresh = [row for row in fold_rows if row["volume_id"] not in seen]
        seen |= {row["volume_id"] for row in fold_rows}
        rows += fresh
    if not rows:
        return None
    types = metrics.FLUID_TYPES
    ids = np.array([row["volume_id"] for row in rows], dtype=object)
    p = np.array([[float(row[f"p_{t}"]) for t in types] for row in rows])
    y = np.array([[int(row[f"label_{t}"]) for t in types] for row in rows])
    vendor_of = {row["volume_id"]: row.get("vendor", "") for row in rows}
    volumes, scores = metrics.volume_scores(p, ids)
    _, answers = metrics.volume_labels(y, ids)
    return volumes, np.array([vendor_of[v] for v in volumes], dtype=object), scores, answers


def rows(results: Sequence[dict], logdir) -> List[dict]:
    """One row per (design, batch, network, type, vendor): per-B-scan means over folds, the pooled per-volume AUC."""
    out = []
    for (design, batch, arch), members in sorted(grouped(results).items()):
        on = "test" if all(m.get("test_type_auc") for m in members) else "validation"
        prefix = "test_" if on == "test" else ""
        pooled = pooled_volumes(members, logdir, on) if logdir else None
        per_vendor = metrics.per_volume_auc(pooled[2], pooled[3], pooled[1]) if pooled else {}
        for t in metrics.FLUID_TYPES:
            aucs = [m[f"{prefix}type_auc"][t] for m in members if m[f"{prefix}type_auc"].get(t) is not None]
            accuracy = [m[f"{prefix}type_accuracy"][t] for m in members
                        if m[f"{prefix}type_accuracy"].get(t) is not None]
            base = {"design": design, "batch": batch, "arch": arch, "type": t, "on": on, "folds": len(members),
                    "bscan_accuracy": statistics.fmean(accuracy) if accuracy else None,
                    "bscan_auc": statistics.fmean(aucs) if aucs else None,
                    "bscan_auc_std": statistics.stdev(aucs) if len(aucs) > 1 else None}
            if not per_vendor:
                out.append({**base, "vendor": "", "volumes": "", "volumes_with_type": "", "volume_auc": None})
            for vendor, entry in sorted(per_vendor.items()):
                out.append({**base, "vendor": vendor, "volumes": entry["volumes"],
                            "volumes_with_type": entry["with_type"][t], "volume_auc": entry["auc"][t]})
    return out


def write(results: Sequence[dict], out_dir, logdir) -> tuple:
    """fluid_types_{design}.csv of every design with fluid-types runs; returns (names written, {design: rows})."""
    table = rows(results, logdir)
    written, by_design = [], {}
    for design in sorted({r["design"] for r in table}):
        mine = [r for r in table if r["design"] == design]
        name = f"fluid_types_{design}.csv"
        outputs.write_csv(out_dir / name, COLUMNS, mine)
        written.append(name)
        by_design[design] = mine
    return written, by_design


def section(by_design: dict) -> List[str]:
    """The page's fluid-types section: per design a table per type, per B-scan and per volume pooled."""
    if not by_design:
        return []
    esc = html.escape

    def show(value):
        return "n/a" if value in (None, "") else f"{value:.3f}" if isinstance(value, float) else str(value)

    parts = ["<h2>Fluid types: IRF, SRF and PED</h2>", f'<p class="method">{esc(__doc__.split(chr(10), 2)[2])}</p>']
    for design, mine in by_design.items():
        parts.append(f"<h3>{esc(design)} design</h3>")
        head = ("Batch size", "Network", "Type", "Per B-scan accuracy", "Per B-scan AUC", "Vendor",
                "Volumes (with the type)", "Per volume AUC (pooled)", "Scored on")
        lines = ['<table class="types">', "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
        for r in mine:
            lines.append("<tr>" + "".join(f"<td>{esc(show(c))}</td>" for c in (
                r["batch"], r["arch"], r["type"].upper(), r["bscan_accuracy"], r["bscan_auc"], r["vendor"] or "-",
                f"{r['volumes']} ({r['volumes_with_type']})" if r["volumes"] != "" else "-", r["volume_auc"],
                f"{r['on']} ({r['folds']} folds)")) + "</tr>")
        parts.append("\n".join(lines + ["</table>"]))
    return parts
