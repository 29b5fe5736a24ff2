"""The report's learning curves: how many volumes (patients) a network needs to reach a target score.

A sweep with `--train_volume_counts` trains each network on N whole volumes of every fold's training folds
(octtl.data.folds.training_volumes), for several N and repeats, each for the iterations the whole folds get.
This module gathers those runs per design, network and setting (the session's variant, e.g. the trainable
layers), scores each on its held-out test fold where it has one (else its validation fold, the paper's), and
writes `learning_curve_{design}.csv`, a figure per design and metric with every network, and the page's
section, through octtl.results.learning_curve (fits, intervals, verdicts).
"""

import html
import pathlib
import statistics
from typing import Dict, List, Sequence, Tuple

from octtl import outputs, runs
from octtl.errors import InputError
from octtl.results import figures, learning_curve, tables

TARGETS = {"auc": 0.95, "accuracy": 0.90}  # the report's --target_auc and --target_accuracy defaults
FIELDS = {"auc": 1, "accuracy": 0}  # each metric's place in tables.ESTIMATES' fields
MISLEAD = ("A fitted curve is a summary of the points it was fitted to: read the volumes-needed figure as an "
           "extrapolation, trustworthy near the largest N trained and less so towards 4x it (the horizon, beyond "
           "which nothing is read); a curve that plateaus below the target, or rises only by noise between few "
           "folds, gives no figure, and even a good fit cannot see a plateau that starts beyond the data.")


def curve_results(results: Sequence[dict]) -> Dict[str, List[dict]]:
    """{design: its ok runs that belong to a learning curve}: designs with a point of N volumes, and with them
    their whole-folds runs of the same session variant (the curve's 'all' point)."""
    out: Dict[str, List[dict]] = {}
    ok = [r for r in results if r.get("status") == "ok"]
    curved = {_curve(r) for r in ok if runs.variant_of(r)["train_volumes"] != "all"}
    for r in ok:
        if _curve(r) in curved:
            out.setdefault(r["design"], []).append(r)
    return out


def _curve(result: dict) -> tuple:
    """The curve a run belongs to: its design, network, batch and session variant (the setting)."""
    return (result["design"], result["arch"], int(result["batch"]), runs.session_variant(runs.run_of(result).variant))


def points(members: Sequence[dict], metric: str) -> Tuple[List[learning_curve.Point], str]:
    """The curve's points, one per (fold, repeat, N), and which figures they are ('test' or 'validation').

    A whole-folds run counts as its fold's training volumes (result.json's train_volume_count); such counts
    differ a little between grouped folds, so they stand at their median, one 'all' point.
    """
    on = tables.estimate(members)
    field = tables.ESTIMATES[on][FIELDS[metric]]
    whole = [r.get("train_volume_count") for r in members if runs.variant_of(r)["train_volumes"] == "all"]
    whole = [w for w in whole if w]
    all_n = int(statistics.median(whole)) if whole else None
    out = []
    for r in members:
        value = r.get(field)
        volumes = runs.variant_of(r)["train_volumes"]
        n = all_n if volumes == "all" else int(volumes)
        if value is not None and n:
            out.append(learning_curve.Point(int(r["fold"]), int(r.get("repeat", 0)), n, float(value)))
    return out, on


def summaries(members: Sequence[dict], targets: Dict[str, float], draws: int = learning_curve.DRAWS):
    """{(arch, setting, metric): Summary} of one design's curves, and the figures they are on.

    A setting is the runs' batch size and session variant ('batch 16', 'batch 16 train_head').
    """
    by_curve: Dict[tuple, List[dict]] = {}
    for r in members:
        _, arch, batch, variant = _curve(r)
        by_curve.setdefault((arch, f"batch {batch}" + (f" {variant}" if variant else "")), []).append(r)
    out, on = {}, {}
    for (arch, setting), mine in sorted(by_curve.items()):
        for metric in learning_curve.METRICS:
            pts, on[(arch, setting, metric)] = points(mine, metric)
            if len({p.n for p in pts}) >= 2:
                out[(arch, setting, metric)] = learning_curve.summarize(pts, metric, targets[metric], draws=draws)
    return out, on


def write(results: Sequence[dict], out_dir, targets: Dict[str, float]) -> Tuple[List[pathlib.Path], dict]:
    """learning_curve_{design}.csv and learning_curve_{design}_{metric}.png of every design with a curve.

    Returns:
        (the paths written, {design: (summaries, figures each is on)} for the page).
    """
    out_dir = pathlib.Path(out_dir)
    written, by_design = [], {}
    for design, members in curve_results(results).items():
        done, on = summaries(members, targets)
        if not done:
            continue
        by_design[design] = (done, on)
        path = out_dir / f"learning_curve_{design}.csv"
        outputs.write_csv(path, (*learning_curve.COLUMNS, "on"), [
            {**row, "on": on[(arch, setting, metric)]} for (arch, setting, metric), summary in done.items()
            for row in learning_curve.rows(summary, design, arch, setting)])
        written.append(path)
        for metric in learning_curve.METRICS:
            curves = {f"{arch} ({setting})": s for (arch, setting, m), s in done.items() if m == metric}
            if curves:
                name = out_dir / f"learning_curve_{design}_{metric}.png"
                figure = figures.learning_curves(curves, f"{design} design: {metric} against training volumes")
                figures.save(figure, name)
                written.append(name)
    return written, by_design


def section(by_design: dict, images: dict, figure_html) -> List[str]:
    """The page's learning-curve section: per design a table of each curve's verdict, the figures, a caution."""
    if not by_design:
        return []
    esc = html.escape
    parts = ["<h2>Learning curves: how many volumes to annotate</h2>", f'<p class="method">{esc(MISLEAD)}</p>']
    for design, (done, on) in by_design.items():
        parts.append(f"<h3>{esc(design)} design</h3>")
        head = ("Network", "Setting", "Metric", "Scored on", "N trained", "Mean at each N", "Fit a - b N^-c",
                "Volumes to reach the target")
        rows = ['<table class="curves">', "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
        for (arch, setting, metric), s in done.items():
            means = ", ".join(f"{int(n)}: {m:.3f}" for n, m in zip(s.n, s.mean))
            fit = ("-" if s.fit is None else "a {:.3f}, b {:.3f}, c {:.2f}".format(*s.fit))
            cells = (arch, setting, metric, on[(arch, setting, metric)], ",".join(str(int(n)) for n in s.n), means,
                     fit, f"{s.target:g}: {s.verdict}")
            rows.append("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in cells) + "</tr>")
        rows.append("</table>")
        parts.append("\n".join(rows))
        parts.append(f'<p>Files: <a href="learning_curve_{design}.csv">learning_curve_{design}.csv</a>.</p>')
        parts.append('<div class="figures">' + "".join(
            figure_html(name, images[name], f"Learning curves, {design} design, {name.rsplit('_', 1)[1][:-4]}: each "
                        "fold x repeat a faint point, the mean over folds with its 95% interval, the fitted law "
                        "(dashed beyond the data) with its bootstrap band, the target as a dotted line.")
            for name in (f"learning_curve_{design}_{m}.png" for m in learning_curve.METRICS) if name in images)
            + "</div>")
    return parts


def check_targets(targets: Dict[str, float]):
    """Refuses a target outside what its metric can reach, naming the flag."""
    for metric, value in targets.items():
        low = 0.5 if metric == "auc" else 0.0
        if not low < value <= 1.0:
            raise InputError(f"--target_{metric}={value}: must be in ({low:g}, 1]")

