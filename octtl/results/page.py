"""Writes a report folder: Tables II-III (markdown and CSV) with intervals, Figs 2-4, accuracy by design, the
paired statistics across folds (paired_{design}.csv, critical-difference diagrams), pooled ROC curves, and
index.html.

index.html embeds every figure as a base64 PNG, so the one file opens offline anywhere; the PNG, CSV and
markdown files beside it are the same content for other tools.
"""

import base64
import functools
import html
import pathlib
import time
from typing import Callable, List, Sequence, Tuple

import numpy as np

from octtl import outputs, runs

from octtl.results import annotation_budget, classes, comparisons, fluid_types

from octtl.results import figures

from octtl.results import stats

from octtl.results import tables

from octtl.results import variants
from octtl import console

from octtl.results import clinical, vendors

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
th { background: #eee; } td.batch { font-weight: bold; vertical-align: top; }
td.incomplete { background: #fff3cd; } .note { color: #8a5a00; } img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
td.significant { font-weight: bold; background: #e3f2e1; } td.num { text-align: right; }
.method { font-size: 0.9em; color: #333; }
"""


def figure_files(rows: Sequence[tables.Row], curves: dict) -> List[Tuple[str, str, Callable]]:
    """(file name, caption, function drawing it) of every figure of the report."""
    out = []
    for design in tables.designs(rows):
        label = tables.design_label(rows, design)
        batches = ", ".join(map(str, figures.curve_batches(rows, design)))
        out += [
            (f"fig2_{design}.png", f"Fig. 2, {label}: mean accuracy vs mean iterations to best accuracy; labels "
             "are batch sizes.", functools.partial(figures.accuracy_vs_iterations, rows, design)),
            (f"fig3_{design}.png", f"Fig. 3, {label}: mean validation accuracy across folds at each evaluated "
             f"iteration, batch sizes {batches}; dots: mean best accuracy at mean iterations to best.",
             functools.partial(figures.accuracy_curves, rows, curves, design)),
            (f"fig4_{design}.png", f"Fig. 4, {label}: batch size {figures.fig4_batch(rows, design)}, bubble area "
             "proportional to the number of parameters.", functools.partial(figures.bubbles, rows, design)),
        ]
    out.append(("accuracy_by_design.png", "Mean accuracy (std over folds) of each network in each train-set design.",
                functools.partial(figures.accuracy_by_design, rows)))
    return out


def cd_name(design: str, batch: int) -> str:
    """File name of the critical-difference diagram of a design's batch size."""
    return f"cd_{design}_batch{batch}.png"


def roc_name(design: str) -> str:
    """File name of a design's ROC figure."""
    return f"roc_{design}.png"


def statistics_files(rows: Sequence[tables.Row], tested: Sequence[comparisons.Comparison],
                     pooled: dict) -> List[Tuple[str, str, Callable]]:
    """(file name, caption, drawing function) of the critical-difference diagrams and the ROC figures."""
    out = []
    for c in tested:
        acc = c.accuracy
        if acc.test == "Friedman":
            title = (f"{tables.design_label(rows, c.design)}, batch size {c.batch}: average rank of accuracy over "
                     f"{len(acc.folds)} folds")
            out.append((cd_name(c.design, c.batch),
                        f"Critical-difference diagram (Demsar 2006), {title}; 1 = best. Networks joined by a "
                        f"thick line are not significantly different (Nemenyi, alpha = {stats.ALPHA}); "
                        f"CD = {acc.cd:.2f}.", functools.partial(figures.critical_difference, acc, title)))
    for design, entries in pooled.items():
        if any(p.folds for p in entries):
            label = tables.design_label(rows, design)
            out.append((roc_name(design),
                        f"ROC curves, {label}: validation predictions of every fold pooled (each fold's best "
                        "model), for the best networks by mean accuracy; the pooled AUC mixes the folds' "
                        "calibrations, so it differs from the mean of per-fold AUCs in the tables.",
                        functools.partial(figures.roc, entries, f"ROC, predictions pooled over folds, {label}")))
    return out


COMMAND = "octtl.report"  # what the report folder's record (octtl.outputs.RECORD) names as its writer


def write_report(results: Sequence[dict], out_dir, source: str, k: int = 3, logdir=None, overwrite: bool = False,
                 left_out: Sequence[str] = (), targets=None) -> List[pathlib.Path]:
    """Writes every table, figure and index.html of `results` into `out_dir`; returns the paths written.

    The report is built in a staging folder and renamed into place whole, replacing `out_dir` only where an earlier
    report wrote it (its record says so, octtl.outputs.check_folder) or `overwrite` is given.

    Args:
        results: result.json dicts (ok and failed).
        out_dir: Folder to write (replaced whole).
        source: Where the results came from, said on the page.
        k: Networks per batch size in the top table and in the ROC figures.
        logdir: Root of the run folders, where each run's predictions.csv is (None: no ROC curves).
        overwrite: Replace `out_dir` even when it holds what the report did not write.
        left_out: One line per result file that could not be read (said on the page).
        targets: {'auc': ..., 'accuracy': ...} the learning curves' targets (annotation_budget.TARGETS).

    Raises:
        InputError: a malformed predictions.csv, or an `out_dir` the report may not replace (before anything is
            written).
    """
    out_dir = pathlib.Path(out_dir)
    outputs.check_folder(out_dir, "--out_dir", COMMAND, overwrite)
    # Tables II-III, their statistics and figures are the paper's settings; other variants get their own tables.
    variant_rows = {axis: variants.variant_table(results, axis) for axis in variants.AXES}
    variant_rows = {axis: rows for axis, rows in variant_rows.items() if any(not r.is_default for r in rows)}
    everything = list(results)
    results = [r for r in results if not runs.run_of(r).variant]
    rows, failed = tables.aggregate(results)
    curves = tables.accuracy_curves(results)
    tested = comparisons.comparisons(results)
    # Read every input before writing anything, so bad input leaves no half-written report.
    pooled = {design: comparisons.pooled_predictions(results, logdir, tables.roc_rows(rows, design, k))
              for design in tables.designs(rows)}
    with outputs.staged(out_dir, "--out_dir") as staging:
        curve_paths, by_design = annotation_budget.write(everything, staging, targets or annotation_budget.TARGETS)
        names = [path.name for path in curve_paths]
        class_names, class_designs = classes.write(everything, staging)
        type_names, type_designs = fluid_types.write(everything, staging, logdir)
        names += class_names + type_names
        # Operating points, calibration and the vendors left out (issue #24).
        clinical_paths, clinical_summaries = clinical.write(results, staging, logdir, rows, k)
        vendor_rows = vendors.rows(results, logdir)
        if vendor_rows:
            vendors.write(vendor_rows, staging / "vendors.csv")
            clinical_paths.append(staging / "vendors.csv")
        names += [path.name for path in clinical_paths]
        for design in tables.designs(rows):
            mine = [r for r in rows if r.design == design]
            tables.write_csv(mine, staging / f"table_{design}.csv")
            (staging / f"table_{design}.md").write_text(
                markdown(design, rows, failed, k, tested, _macro([r for r in results if r["design"] == design])))
            comparisons.write_paired_csv([c for c in tested if c.design == design], staging / f"paired_{design}.csv")
            names += [f"table_{design}.csv", f"table_{design}.md", f"paired_{design}.csv"]
        for axis, axis_rows in variant_rows.items():
            write_variant_csv(axis_rows, staging / f"variants_{axis}.csv")
            names.append(f"variants_{axis}.csv")
        images, captions = {}, {}
        for name, caption, draw in figure_files(rows, curves) + statistics_files(rows, tested, pooled):
            figures.save(draw(), staging / name)
            images[name], captions[name] = (staging / name).read_bytes(), caption
            names.append(name)
        for path in [*curve_paths, *(staging / name for name in class_names), *clinical_paths]:
            if path.suffix == ".png":
                images[path.name] = path.read_bytes()
        (staging / "index.html").write_text(page(rows, failed, results, images, captions, source, k, tested,
                                                 pooled, variant_rows, everything, left_out, by_design,
                                                 (class_designs, type_designs),
                                                 operating=(clinical_summaries, vendor_rows)))
        names.append("index.html")
        outputs.write_record(staging, COMMAND, names)
        outputs.check_folder(out_dir, "--out_dir", COMMAND, overwrite)  # again: nothing of someone else's is lost
        outputs.publish(staging, out_dir, overwrite=True)
    return [out_dir / name for name in names]


def markdown(design: str, rows: Sequence[tables.Row], failed: Sequence[dict], k: int = 3,
             tested: Sequence[comparisons.Comparison] = (), macro: bool = False) -> str:
    """table_{design}.md: the top-k per batch size (Table II/III), every network, then the paired tests of each
    batch size (`tested`, from `comparisons.comparisons`)."""
    mine = [r for r in rows if r.design == design]
    lines = [f"# {tables.title(design, mine, f'top {k} performers')}", ""]
    lines += tables.markdown_table(tables.top(mine, design, k), tables.columns(mine, True, macro), True)
    lines += ["", f"## All networks, {tables.design_label(rows, design)}", ""]
    lines += tables.markdown_table(mine, tables.columns(mine, False, macro), True)
    extra = _method_notes(mine) + tables.notes(design, rows, failed)
    if extra:
        lines += [""] + [f"- {n}" for n in extra]
    broken = tables.failed_lines(design, failed)
    if broken:
        lines += ["", "## Failed runs", ""] + [f"- {b}" for b in broken]
    mine = [c for c in tested if c.design == design]
    if mine:
        lines += ["", "## Paired comparisons across folds", ""]
        lines += [f"- {line}" for c in mine for line in comparisons.comparison_lines(c)]
    return "\n".join(lines) + "\n"


def _macro(results) -> bool:
    """Whether a design's runs are K-class ones, whose AUC is the macro one-vs-rest AUC."""
    return any(classes.is_multiclass(r) for r in results)


def _method_notes(rows: Sequence[tables.Row]) -> List[str]:
    """How the table's intervals were computed, and, with test folds, what validation and test mean."""
    tested = any(r.estimate == "test" for r in rows)
    return [tables.INTERVAL_NOTE] + ([tables.TEST_NOTE] if tested else [])


def page(rows, failed, results, images, captions, source: str, k: int, tested=(), pooled=None,
         variant_rows=None, everything=None, left_out=(), curves=None, beyond=({}, {}),
         operating=({}, [])) -> str:
    """index.html: per design the top-k and full tables with intervals and notes, the paired statistics, the
    figures; then the operating points, calibration and vendors left out (`operating`: octtl.results.clinical.write's
    summaries and octtl.results.vendors.rows), the variants against the defaults, the failed runs of variants, what
    could not be read, and the settings. `results` are the runs of the default settings; `everything` (default:
    those) every run counted.

    One piece: the page is one HTML document written top to bottom, each section a few lines of markup.
    """
    pooled = pooled or {}
    esc = html.escape
    everything = results if everything is None else everything
    ok = sum(r.get("status") == "ok" for r in everything)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>octtl report: Tables II-III, Figs 2-4</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>Transfer learning for macular fluid detection: results</h1>",
        f"<p>{console.count(len(everything), 'run')} ({ok} ok, {len(everything) - ok} failed) from "
        f"<code>{esc(source)}</code>, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Mean (sample standard deviation, ddof=1) over folds of each run's "
        "best validation accuracy and its AUC, as in the paper, and, where runs held a test fold out, of that "
        "checkpoint's test accuracy and AUC, with a 95% confidence interval; networks of a batch size compared "
        "fold by fold (Friedman, Nemenyi, Wilcoxon). Files: "
        + ", ".join(f'<a href="table_{d}.csv">table_{d}.csv</a>, <a href="table_{d}.md">table_{d}.md</a>, '
                    f'<a href="paired_{d}.csv">paired_{d}.csv</a>'
                    for d in tables.designs(rows)) + ".</p>",
    ]
    for design in tables.designs(rows):
        mine = [r for r in rows if r.design == design]
        parts.append(f"<h2>{esc(tables.design_label(rows, design).capitalize())}</h2>")
        parts.append(f'<p class="grouping">{esc(tables.grouping(results, design))}</p>')
        parts.append(f"<h3>{esc(tables.title(design, mine, f'top {k} performers'))}</h3>")
        macro = _macro([r for r in results if r["design"] == design])
        parts.append(tables.html_table(tables.top(mine, design, k), tables.columns(mine, True, macro), True))
        parts.append("<h3>All networks</h3>")
        parts.append(tables.html_table(mine, tables.columns(mine, False, macro), True))
        for note in _method_notes(mine):
            parts.append(f'<p class="method">{esc(note)}</p>')
        for note in tables.notes(design, rows, failed):
            parts.append(f'<p class="note">{esc(note)}</p>')
        broken = tables.failed_lines(design, failed)
        if broken:
            parts.append("<h3>Failed runs (not averaged)</h3><ul>"
                         + "".join(f"<li>{esc(b)}</li>" for b in broken) + "</ul>")
        parts += statistics_section([c for c in tested if c.design == design], images, captions)
        names = [f"fig2_{design}.png", f"fig4_{design}.png", f"fig3_{design}.png", roc_name(design)]
        parts.append('<div class="figures">' + "".join(
            _figure(name, images[name], captions[name]) for name in names if name in images) + "</div>")
        missing = [p for p in pooled.get(design, []) if p.missing]
        if missing:
            parts.append('<p class="note">' + esc(
                "ROC: no predictions.csv in the run folders for " + "; ".join(
                    f"{p.row.arch} batch {p.row.batch} ({len(p.missing)} of {len(p.missing) + len(p.folds)} folds)"
                    for p in missing)
                + " (the report reads them from --logdir's run folders)") + "</p>")
    parts.append("<h2>Accuracy by train-set design</h2>")
    parts.append(_figure("accuracy_by_design.png", images["accuracy_by_design.png"],
                         captions["accuracy_by_design.png"]))
    parts += clinical.section(operating[0], images, _figure, rows)  # operating points, calibration (#24)
    parts += vendors.section(operating[1])
    parts += variants_section(variant_rows or {})
    broken = [r for r in everything if r.get("status") != "ok" and runs.run_of(r).variant]
    if broken:
        parts.append("<h2>Failed runs of variants</h2><ul>" + "".join(
            f"<li>{esc(str(runs.run_of(r)))}: {esc(str(r.get('error', 'failed')))}</li>"
            for r in sorted(broken, key=runs.run_of)) + "</ul>")
    if left_out:
        parts.append("<h2>Results that could not be read (left out)</h2><ul>"
                     + "".join(f"<li>{esc(line)}</li>" for line in left_out) + "</ul>")
    parts += annotation_budget.section(curves or {}, images, _figure)
    parts += classes.section(beyond[0], images, _figure) + fluid_types.section(beyond[1])
    settings = tables.settings(results)
    if settings:
        parts.append("<h2>Settings of the runs</h2><ul>" + "".join(
            f"<li><code>{esc(key)}</code>: {esc(', '.join(values))}</li>" for key, values in settings.items())
            + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


VARIANT_COLUMNS = ("design", "arch", "batch", "axis", "variant", "value", "n_folds", "n_paired", "accuracy_mean",
                   "accuracy_ci_low", "accuracy_ci_high", "accuracy_diff", "accuracy_p", "auc_mean", "auc_ci_low",
                   "auc_ci_high", "auc_diff", "auc_p", "estimate")
_AXIS_WORDS = {"lr": "learning rate (--lrs)", "augment": "augmentation (--augments)",
               "denoise": "denoising (--denoises)", "trainable": "what trains (--trainables)"}
VARIANT_NOTE = (
    "Each variant against the default settings (the paper's: lr 1e-4, no augmentation, no denoising, every layer "
    "fine-tuned) of the same network and batch size, on the same folds: mean over its folds with the Nadeau-Bengio "
    "95% interval, the mean difference to the default over the folds both finished, and the two-sided Wilcoxon "
    "signed-rank p of that difference. Choosing the best variant on these same folds is optimistic: with no nested "
    "validation, its mean overstates what it would score on new data.")


def write_variant_csv(rows, path):
    """One line per variant row (octtl.results.variants.variant_table), numbers at full precision."""
    outputs.write_csv(path, VARIANT_COLUMNS,
                      ([tables.csv_number(getattr(row, c)) for c in VARIANT_COLUMNS] for row in rows))


def variants_section(variant_rows) -> List[str]:
    """The page's tables of variants along each swept axis, against the default, with the caution they need."""
    if not variant_rows:
        return []
    esc = html.escape
    parts = ["<h2>Variants against the defaults</h2>", f'<p class="method">{esc(VARIANT_NOTE)}</p>']
    for axis, rows in variant_rows.items():
        parts.append(f"<h3>{esc(_AXIS_WORDS[axis].capitalize())} "
                     f'(<a href="variants_{axis}.csv">variants_{axis}.csv</a>)</h3>')
        head = ["Design", "Network", "Batch", "Variant", "Folds", "Accuracy [95% CI]", "vs default", "p",
                "AUC [95% CI]", "vs default", "p"]
        out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
        for r in rows:
            diff = (lambda d: "" if r.is_default or d != d else f"{d:+.3f}")
            cells = [r.design, r.arch, str(r.batch), r.value + (" (default)" if r.is_default else ""),
                     f"{r.n_folds}" + ("" if r.is_default else f" ({r.n_paired} paired)"),
                     _mean_ci(r.accuracy_mean, r.accuracy_ci_low, r.accuracy_ci_high), diff(r.accuracy_diff)]
            out.append("<tr>" + "".join(_td(c) for c in cells) + (_td("") if r.is_default else _p_cell(r.accuracy_p))
                       + _td(_mean_ci(r.auc_mean, r.auc_ci_low, r.auc_ci_high)) + _td(diff(r.auc_diff))
                       + (_td("") if r.is_default else _p_cell(r.auc_p)) + "</tr>")
        out.append("</table>")
        parts.append("\n".join(out))
    return parts


def _mean_ci(mean: float, low: float, high: float) -> str:
    if mean != mean:
        return "-"
    return f"{mean:.3f}" + ("" if low != low else f" [{low:.3f}, {high:.3f}]")


_METHOD = (
    "Fold i of two runs is the same split only when they share data, design, number of folds, seed and grouping "
    "by volume; only such runs are compared, fold by fold, on the folds all of them finished. With three or more "
    "networks: the Friedman test (chi-square corrected for ties; Iman-Davenport F beside it), then the Nemenyi "
    "test of every pair and a critical-difference diagram (Demsar 2006). With two: the Wilcoxon signed-rank test "
    "(exact two-sided where possible). No test with fewer than {min_folds} common folds. Folds are not "
    "independent samples, so these p-values are approximate and tend to be optimistic; bold: p < {alpha}.")


def statistics_section(tested: Sequence[comparisons.Comparison], images: dict, captions: dict) -> List[str]:
    """The HTML of one design's paired statistics: a summary table per batch size, then pairwise tables and
    critical-difference diagrams."""
    if not tested:
        return []
    esc = html.escape
    parts = ["<h3>Paired comparisons across folds</h3>",
             f'<p class="method">{esc(_METHOD.format(min_folds=stats.MIN_FOLDS, alpha=stats.ALPHA))}</p>',
             '<table class="omnibus"><tr><th>Batch size</th><th>Networks</th><th>Common folds</th><th>Test</th>'
             "<th>Accuracy: statistic</th><th>Accuracy: p</th><th>AUC: statistic</th><th>AUC: p</th></tr>"]
    for c in tested:
        folds = sorted({len(c.accuracy.folds), len(c.auc.folds)})
        cells = [_td(str(c.batch)), _td(", ".join(c.archs) or "-"), _td(" / ".join(map(str, folds))),
                 _td(c.accuracy.test or c.auc.test or "none")]
        for m in (c.accuracy, c.auc):
            cells += _omnibus_cells(m)
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    for c in tested:
        notes = [f"left out of the comparison: {'; '.join(c.left_out)}"] if c.left_out else []
        notes += [n for m in (c.accuracy, c.auc) for n in comparisons.comparison_notes(m)]
        parts += [f'<p class="note">{esc(f"Batch size {c.batch}, {n}")}</p>' for n in notes]
    for c in tested:
        if not (c.accuracy.test or c.auc.test):
            continue
        test = c.accuracy.pairwise_test or c.auc.pairwise_test
        parts.append(f"<h4>Batch size {c.batch}: every pair ({esc(test)} test)</h4>")
        parts.append(pairwise_table(c))
        name = cd_name(c.design, c.batch)
        if name in images:
            parts.append(_figure(name, images[name], captions[name]))
    return parts


def _td(text: str, cls: str = "") -> str:
    attribute = f' class="{cls}"' if cls else ""
    return f"<td{attribute}>{html.escape(text)}</td>"


def _p_cell(p: float, text: str = "") -> str:
    """A p-value cell, marked when significant at stats.ALPHA."""
    significant = np.isfinite(p) and p < stats.ALPHA
    return _td(text or stats.format_p(p), "num significant" if significant else "num")


def _omnibus_cells(m: comparisons.MetricComparison) -> List[str]:
    """(statistic, p) cells of one metric's test across networks."""
    if m.friedman is not None:
        f = m.friedman
        if not np.isfinite(f.statistic):
            return [_td("all tied"), _td("n/a")]
        return [_td(f"χ² = {f.statistic:.2f}; Iman-Davenport F = {f.iman_davenport:.2f}, "
                    f"p = {stats.format_p(f.iman_davenport_pvalue)}"),
                _p_cell(f.pvalue, f"Friedman p = {stats.format_p(f.pvalue)}")]
    if m.test == "Wilcoxon":
        p = float(m.pairwise[0, 1])
        return [_td("Wilcoxon signed-rank"), _p_cell(p, f"Wilcoxon p = {stats.format_p(p)}")]
    return [_td("-"), _td(f"no test: {m.reason}")]


def pairwise_table(c: comparisons.Comparison) -> str:
    """Every pair of networks: mean difference of each metric over the common folds, and its p."""
    rows = ['<table class="pairwise"><tr><th>Network A</th><th>Network B</th>'
            "<th>Accuracy A − B (mean over folds)</th><th>Accuracy p</th><th>AUC A − B</th><th>AUC p</th></tr>"]
    order = c.accuracy.archs if c.accuracy.test else c.auc.archs
    for i, a in enumerate(order):
        for b in order[i + 1:]:
            cells = [_td(a), _td(b)]
            for m in (c.accuracy, c.auc):
                if not m.test or a not in m.archs or b not in m.archs:
                    cells += [_td("-"), _td("-")]
                    continue
                ia, ib = m.archs.index(a), m.archs.index(b)
                diff = float(m.scores[:, ia].mean() - m.scores[:, ib].mean())
                cells += [_td(f"{diff:+.3f}", "num"), _p_cell(float(m.pairwise[ia, ib]))]
            rows.append("<tr>" + "".join(cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} (<a href=\"{html.escape(name)}\">{html.escape(name)}</a>)"
            "</figcaption></figure>")
