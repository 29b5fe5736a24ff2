"""The report's K-class results (e.g. OCT2017's NORMAL, DME, CNV, DRUSEN): per-class AUCs and confusion matrices.

Tables II-III show K-class runs as any other, their AUC being the macro one-vs-rest AUC (so named there); this
module adds, per design, each network's one-vs-rest AUC of every class (mean over folds, on the held-out test
folds where every run has them) in `classes_{design}.csv` and on the page, and a confusion-matrix figure per
network (summed over folds; rows the true class).
"""

import html
import statistics
from typing import Dict, List, Sequence

import numpy as np
from matplotlib.figure import Figure

from octtl import outputs
from octtl.results import tables

COLUMNS = ("design", "batch", "arch", "on", "folds", "class", "auc_mean", "auc_std")
NOTE = ("One-vs-rest AUC of each class: its probability against 'this class or not'; the macro AUC of Tables "
        "II-III is their mean. A cross-validation on a few hundred B-scans is not a held-out test after "
        "100,000: set the figures beside Kermany et al. 2018's (96.6% accuracy on their test split) with that "
        "in mind.")


def is_multiclass(result: dict) -> bool:
    """Whether a result is a K-class run (K > 2) of the records' classes."""
    return result.get("task", "fluid") == "fluid" and len(result.get("classes") or ()) > 2


def grouped(results: Sequence[dict]) -> Dict[tuple, List[dict]]:
    """The ok K-class runs by (design, batch, arch)."""
    out: Dict[tuple, List[dict]] = {}
    for r in results:
        if r.get("status") == "ok" and is_multiclass(r):
            out.setdefault((r["design"], int(r["batch"]), r["arch"]), []).append(r)
    return out


def _fields(members: Sequence[dict]):
    on = tables.estimate(members)
    return on, ("test_class_auc", "test_confusion") if on == "test" else ("class_auc", "confusion")


def rows(results: Sequence[dict]) -> List[dict]:
    """One row per (design, batch, network, class): the class's one-vs-rest AUC over the folds."""
    out = []
    for (design, batch, arch), members in sorted(grouped(results).items()):
        on, (auc_field, _) = _fields(members)
        classes = members[0]["classes"]
        for name in classes:
            values = [m[auc_field][name] for m in members if (m.get(auc_field) or {}).get(name) is not None]
            mean = statistics.fmean(values) if values else None
            spread = statistics.stdev(values) if len(values) > 1 else None
            out.append({"design": design, "batch": batch, "arch": arch, "on": on, "folds": len(members),
                        "class": name, "auc_mean": mean, "auc_std": spread})
    return out


def confusion(members: Sequence[dict]) -> np.ndarray:
    """The runs' confusion matrices summed over folds (test folds where every run has them)."""
    _, (_, field) = _fields(members)
    return np.sum([np.asarray(m[field]) for m in members if m.get(field) is not None], axis=0)


def confusion_figure(matrix: np.ndarray, classes: Sequence[str], title: str) -> Figure:
    """A confusion matrix as a heatmap, counts in the cells, rows the true class and columns the predicted."""
    fig = Figure(figsize=(4.8, 4.2))
    ax = fig.add_subplot()
    ax.imshow(matrix, cmap="Blues")
    for i in range(len(classes)):
        for j in range(len(classes)):
            value = int(matrix[i, j])
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > matrix.max() / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write(results: Sequence[dict], out_dir) -> tuple:
    """classes_{design}.csv and a confusion-matrix PNG per network (at its best batch) of every design with
    K-class runs; returns (the names written, {design: (rows, {png name: caption})})."""
    from octtl.results import figures

    written, by_design = [], {}
    table = rows(results)
    groups = grouped(results)
    for design in sorted({d for d, _, _ in groups}):
        mine = [r for r in table if r["design"] == design]
        name = f"classes_{design}.csv"
        outputs.write_csv(out_dir / name, COLUMNS, mine)
        written.append(name)
        pictures = {}
        best = {}
        for (d, batch, arch), members in groups.items():
            if d == design:
                score = statistics.fmean(m.get("test_accuracy", m["best_accuracy"]) or 0 for m in members)
                if arch not in best or score > best[arch][0]:
                    best[arch] = (score, batch, members)
        for arch, (_, batch, members) in sorted(best.items()):
            png = f"confusion_{design}_{arch}.png"
            on, _ = _fields(members)
            title = f"{arch}, batch {batch}: {on} predictions of {len(members)} folds"
            figures.save(confusion_figure(confusion(members), members[0]["classes"], title), out_dir / png)
            written.append(png)
            pictures[png] = (f"Confusion matrix of {arch} (batch {batch}), {design} design, summed over "
                             f"{len(members)} folds' {on} predictions; rows the true class, columns the predicted.")
        by_design[design] = (mine, pictures)
    return written, by_design


def section(by_design: dict, images: dict, figure_html) -> List[str]:
    """The page's K-class section: per design the per-class AUC table and the confusion matrices."""
    if not by_design:
        return []
    esc = html.escape
    parts = ["<h2>Classes: one-vs-rest AUC and confusion matrices</h2>", f'<p class="method">{esc(NOTE)}</p>']
    for design, (mine, pictures) in by_design.items():
        parts.append(f"<h3>{esc(design)} design</h3>")
        head = ("Batch size", "Network", "Class", "AUC (std over folds)", "Scored on")
        lines = ['<table class="classes">', "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
        for r in mine:
            auc = "-" if r["auc_mean"] is None else tables.cell(r["auc_mean"], r["auc_std"] or float("nan"))
            lines.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in (
                r["batch"], r["arch"], r["class"], auc, f"{r['on']} ({r['folds']} folds)")) + "</tr>")
        parts.append("\n".join(lines + ["</table>"]))
        parts.append('<div class="figures">' + "".join(
            figure_html(name, images[name], caption) for name, caption in pictures.items() if name in images)
            + "</div>")
    return parts
