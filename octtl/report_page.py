"""Writes a report folder: Tables II-III (markdown and CSV), Figs 2-4, accuracy by design, and index.html.

index.html embeds every figure as a base64 PNG, so the one file opens offline anywhere; the PNG, CSV and
markdown files beside it are the same content for other tools.
"""

import base64
import functools
import html
import pathlib
import time
from typing import Callable, List, Sequence, Tuple

from octtl import figures, tables

_STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: left; }
th { background: #eee; } td.batch { font-weight: bold; vertical-align: top; }
td.incomplete { background: #fff3cd; } .note { color: #8a5a00; } img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2em; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #444; }
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


def write_report(results: Sequence[dict], out_dir, source: str, k: int = 3) -> List[pathlib.Path]:
    """Writes every table, figure and index.html of `results` into `out_dir`; returns the paths written.

    Args:
        results: result.json dicts (ok and failed).
        out_dir: Folder to write into (created).
        source: Where the results came from, said on the page.
        k: Networks per batch size in the top table.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failed = tables.aggregate(results)
    curves = tables.accuracy_curves(results)
    written = []
    for design in tables.designs(rows):
        mine = [r for r in rows if r.design == design]
        tables.write_csv(mine, out_dir / f"table_{design}.csv")
        (out_dir / f"table_{design}.md").write_text(tables.markdown(design, rows, failed, k))
        written += [out_dir / f"table_{design}.csv", out_dir / f"table_{design}.md"]
    images, captions = {}, {}
    for name, caption, draw in figure_files(rows, curves):
        figures.save(draw(), out_dir / name)
        images[name], captions[name] = (out_dir / name).read_bytes(), caption
        written.append(out_dir / name)
    (out_dir / "index.html").write_text(page(rows, failed, results, images, captions, source, k))
    written.append(out_dir / "index.html")
    return written


def page(rows, failed, results, images, captions, source: str, k: int) -> str:
    """index.html: per design the top-k and full tables with their notes and figures, then the settings."""
    esc = html.escape
    ok = sum(r.get("status") == "ok" for r in results)
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        "<title>octtl report: Tables II-III, Figs 2-4</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>Transfer learning for macular fluid detection: results</h1>",
        f"<p>{len(results)} runs ({ok} ok, {len(results) - ok} failed) from <code>{esc(source)}</code>, "
        f"{time.strftime('%Y-%m-%d %H:%M')}. Mean (sample standard deviation, ddof=1) over folds of each run's "
        "best validation accuracy and its AUC. Files: "
        + ", ".join(f'<a href="table_{d}.csv">table_{d}.csv</a>, <a href="table_{d}.md">table_{d}.md</a>'
                    for d in tables.designs(rows)) + ".</p>",
    ]
    for design in tables.designs(rows):
        mine = [r for r in rows if r.design == design]
        parts.append(f"<h2>{esc(tables.design_label(rows, design).capitalize())}</h2>")
        parts.append(f"<h3>{esc(tables.title(design, mine, f'top {k} performers'))}</h3>")
        parts.append(tables.html_table(tables.top(mine, design, k), ["Batch size", "Architecture", "Accuracy",
                                                                     "AUC"], True))
        parts.append("<h3>All networks</h3>")
        parts.append(tables.html_table(mine, ["Batch size", "Architecture", "Accuracy", "AUC",
                                              "Iterations to best", "Folds"], True))
        for note in tables.notes(design, rows, failed):
            parts.append(f'<p class="note">{esc(note)}</p>')
        broken = tables.failed_lines(design, failed)
        if broken:
            parts.append("<h3>Failed runs (not averaged)</h3><ul>"
                         + "".join(f"<li>{esc(b)}</li>" for b in broken) + "</ul>")
        parts.append('<div class="figures">' + "".join(
            _figure(name, images[name], captions[name])
            for name in (f"fig2_{design}.png", f"fig4_{design}.png", f"fig3_{design}.png")) + "</div>")
    parts.append("<h2>Accuracy by train-set design</h2>")
    parts.append(_figure("accuracy_by_design.png", images["accuracy_by_design.png"],
                         captions["accuracy_by_design.png"]))
    settings = tables.settings(results)
    if settings:
        parts.append("<h2>Settings of the runs</h2><ul>" + "".join(
            f"<li><code>{esc(key)}</code>: {esc(', '.join(values))}</li>" for key, values in settings.items())
            + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _figure(name: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)} (<a href=\"{html.escape(name)}\">{html.escape(name)}</a>)"
            "</figcaption></figure>")
