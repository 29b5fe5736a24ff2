"""Figs 2-4 of the paper, accuracy by train-set design, critical-difference diagrams and pooled ROC curves.

Matplotlib's object API (`Figure`, no pyplot) draws off screen with no global state, so reports run on
headless machines and in tests.
"""

import math
from typing import Dict, List, Sequence

import numpy as np
from matplotlib.figure import Figure

from octtl.results import comparisons

from octtl.results import learning_curve

from octtl.results import stats

from octtl.results import tables

# Fig 3 shows these batch sizes (the ones every network of the paper reached).
CURVE_BATCHES = (8, 16, 32)
FIG4_BATCH = 8
_WIDTH = 7.5


def _networks(rows: Sequence[tables.Row]) -> List[str]:
    """Networks ordered by their best mean accuracy, so legends list the best first."""
    best: Dict[str, float] = {}
    for r in rows:
        if r.n_folds:
            best[r.arch] = max(best.get(r.arch, -1.0), r.accuracy_mean)
    return sorted(best, key=lambda a: (-best[a], a))


def _colors(names: Sequence[str]) -> Dict[str, str]:
    return {name: f"C{i % 10}" for i, name in enumerate(names)}


def accuracy_vs_iterations(rows: Sequence[tables.Row], design: str) -> Figure:
    """Fig 2: mean accuracy against mean iterations to best, one series per network, points labelled by batch."""
    mine = [r for r in rows if r.design == design and r.n_folds]
    fig = Figure(figsize=(_WIDTH, 5), layout="constrained")
    ax = fig.add_subplot()
    names = _networks(mine)
    colors = _colors(names)
    for arch in names:
        series = sorted((r for r in mine if r.arch == arch), key=lambda r: r.batch)
        x = [r.iterations_to_best_mean for r in series]
        y = [r.accuracy_mean for r in series]
        ax.plot(x, y, "o-", color=colors[arch], label=arch, markersize=5)
        for r in series:
            ax.annotate(str(r.batch), (r.iterations_to_best_mean, r.accuracy_mean), textcoords="offset points",
                        xytext=(4, 4), fontsize=8, color=colors[arch])
    ax.set_xlabel("mean iterations to best accuracy")
    ax.set_ylabel("mean accuracy")
    ax.set_title(f"Fig. 2: mean accuracy vs iterations, {tables.design_label(rows, design)}\n"
                 "labels: batch size", fontsize=10)
    ax.grid(alpha=0.3)
    if names:
        ax.legend(fontsize=8, loc="best")
    return fig


def curve_batches(rows: Sequence[tables.Row], design: str) -> List[int]:
    """Fig 3's batch sizes: 8, 16 and 32 where present, else the three smallest the design has."""
    present = sorted({r.batch for r in rows if r.design == design and r.n_folds})
    chosen = [b for b in CURVE_BATCHES if b in present]
    return chosen or present[:3]


def accuracy_curves(rows: Sequence[tables.Row], curves: Dict[tuple, list], design: str) -> Figure:
    """Fig 3: per network, mean validation accuracy across folds at each evaluated iteration; a panel per batch.

    The dot on each curve is the network's mean best accuracy at its mean iterations to best (Fig 2's point).
    """
    batches = curve_batches(rows, design)
    fig = Figure(figsize=(_WIDTH, 3.2 * max(len(batches), 1)), layout="constrained")
    axes = fig.subplots(max(len(batches), 1), 1, squeeze=False)[:, 0]
    names = _networks([r for r in rows if r.design == design])
    colors = _colors(names)
    for ax, batch in zip(axes, batches):
        for arch in names:
            points = curves.get((design, batch, arch))
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], ".-", color=colors[arch], label=arch,
                    linewidth=1.3, markersize=4)
            row = next(r for r in rows if (r.design, r.batch, r.arch) == (design, batch, arch))
            ax.plot([row.iterations_to_best_mean], [row.accuracy_mean], "o", color=colors[arch], markersize=5)
        ax.set_title(f"batch size {batch}", fontsize=9)
        ax.set_ylabel("mean val. accuracy")
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("iteration")
    if names and batches:
        axes[0].legend(fontsize=7, loc="lower right", ncol=2)
    fig.suptitle(f"Fig. 3: accuracy vs iterations by network, {tables.design_label(rows, design)}",
                 fontsize=10)
    return fig


def fig4_batch(rows: Sequence[tables.Row], design: str):
    """Fig 4's batch size: 8, else the smallest the design has (None when it has none)."""
    present = sorted({r.batch for r in rows if r.design == design and r.n_folds})
    return FIG4_BATCH if FIG4_BATCH in present else (present[0] if present else None)


def bubbles(rows: Sequence[tables.Row], design: str) -> Figure:
    """Fig 4: mean accuracy against mean iterations at batch 8, bubble area proportional to parameters."""
    batch = fig4_batch(rows, design)
    mine = [r for r in rows if r.design == design and r.batch == batch and r.n_folds]
    fig = Figure(figsize=(_WIDTH, 5), layout="constrained")
    ax = fig.add_subplot()
    largest = max((r.params for r in mine if not math.isnan(r.params)), default=1.0) or 1.0
    colors = _colors(_networks(mine))
    for r in mine:
        params = 0.0 if math.isnan(r.params) else r.params
        # Area (points^2) proportional to parameters; the largest network gets 2500.
        ax.scatter([r.iterations_to_best_mean], [r.accuracy_mean], s=max(2500 * params / largest, 12),
                   color=colors[r.arch], alpha=0.45, edgecolors="black", linewidths=0.5)
        ax.annotate(f"{r.arch}\n{params / 1e6:.2f}M", (r.iterations_to_best_mean, r.accuracy_mean),
                    ha="center", va="center", fontsize=7)
    ax.set_xlabel("mean iterations to best accuracy")
    ax.set_ylabel("mean accuracy")
    ax.set_title(f"Fig. 4: batch size {batch}, bubble area = parameters (1M = 1 million), "
                 f"{tables.design_label(rows, design)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.margins(0.2)
    return fig


def accuracy_by_design(rows: Sequence[tables.Row]) -> Figure:
    """Mean accuracy (error bars: std over folds) of each network in each design; a panel per batch size."""
    ok = [r for r in rows if r.n_folds]
    design_order = tables.designs(ok)
    batches = sorted({r.batch for r in ok})
    fig = Figure(figsize=(_WIDTH, 3.2 * max(len(batches), 1)), layout="constrained")
    axes = fig.subplots(max(len(batches), 1), 1, squeeze=False)[:, 0]
    names = _networks(ok)
    colors = _colors(names)
    for ax, batch in zip(axes, batches):
        for i, arch in enumerate(names):
            # Each network a little to the side, so overlapping error bars stay readable.
            shift = 0.3 * (i - (len(names) - 1) / 2) / max(len(names), 1)
            points = [(design_order.index(r.design) + shift, r.accuracy_mean,
                       0.0 if math.isnan(r.accuracy_std) else r.accuracy_std)
                      for r in ok if r.arch == arch and r.batch == batch]
            if not points:
                continue
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], fmt="o-",
                        color=colors[arch], label=arch, capsize=3, markersize=4)
        ax.set_xticks(range(len(design_order)),
                      [tables.design_label(rows, d).replace(" design ", "\n") for d in design_order])
        ax.set_xlim(-0.5, len(design_order) - 0.5)
        ax.set_title(f"batch size {batch}", fontsize=9)
        ax.set_ylabel("mean accuracy")
        ax.grid(alpha=0.3)
    if names and batches:
        axes[0].legend(fontsize=7, loc="best", ncol=2)
    fig.suptitle("Accuracy by train-set design", fontsize=10)
    return fig


def critical_difference(comparison: comparisons.MetricComparison, title: str) -> Figure:
    """Demsar's critical-difference diagram: average ranks on a 1..k axis, the CD bar, and a thick line joining
    networks the Nemenyi test cannot tell apart at stats.ALPHA (drawn by scikit-posthocs)."""
    import pandas
    import scikit_posthocs

    names, k = comparison.archs, len(comparison.archs)
    fig = Figure(figsize=(_WIDTH, 1.6 + 0.3 * k))
    # Labels sit outside the axes on both sides; leave them room.
    fig.subplots_adjust(left=0.25, right=0.75, top=0.72, bottom=0.04)
    ax = fig.add_subplot()
    scikit_posthocs.critical_difference_diagram(
        dict(zip(names, comparison.ranks)), pandas.DataFrame(comparison.pairwise, index=names, columns=names),
        alpha=stats.ALPHA, ax=ax, label_fmt_left="{label} ({rank:.2f})", label_fmt_right="({rank:.2f}) {label}",
        label_props={"fontsize": 9}, color_palette=_colors(names))
    ax.set_xlim(1, k)
    ax.set_xticks(range(1, k + 1))
    # The CD bar above the axis, from rank 1, as in Demsar's figures.
    top = 1.2
    ax.plot([1, 1 + comparison.cd], [top, top], color="black", linewidth=1.5, clip_on=False)
    for x in (1, 1 + comparison.cd):
        ax.plot([x, x], [top - 0.15, top + 0.15], color="black", linewidth=1.5, clip_on=False)
    ax.text(1 + comparison.cd / 2, top + 0.25, f"CD = {comparison.cd:.2f}", ha="center", va="bottom", fontsize=9)
    ax.set_ylim(top=top + 0.1)
    fig.suptitle(title, fontsize=9)
    return fig


def roc(pooled: Sequence[comparisons.Pooled], title: str) -> Figure:
    """ROC curves of the predictions pooled over folds, one per (batch, network), with the pooled AUC."""
    from sklearn import metrics

    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors([p.row.arch for p in pooled])
    for p in pooled:
        if len(p.folds) == 0 or len(set(p.labels.tolist())) < 2:
            continue
        fpr, tpr, _ = metrics.roc_curve(p.labels, p.p_fluid)
        auc = metrics.roc_auc_score(p.labels, p.p_fluid)
        ax.plot(fpr, tpr, color=colors[p.row.arch], linewidth=1.5,
                label=f"{p.row.arch}, batch {p.row.batch}: AUC {auc:.2f} ({len(p.folds)} folds)")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (normal B-scans called fluid)")
    ax.set_ylabel("true positive rate (fluid B-scans found)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="lower right")
    return fig


def save(fig: Figure, path, dpi: int = 100):
    """Writes the figure to `path` at `dpi` dots per inch."""
    fig.savefig(path, dpi=dpi)


def learning_curves(curves: Dict[str, learning_curve.Summary], title: str, path=None) -> Figure:
    """The metric against the number of training volumes, every network (and setting) of one design on one axis.

    Per curve: each fold x repeat a faint point, the per-N mean with its 95% interval as error bars, and the
    fitted law with its bootstrap band, solid over the data and dashed beyond the largest N up to the horizon
    (4x it) where the curve rises. Each target is a grey dotted line. Log-scaled x axis: N doubles from point to
    point; each network's points sit a little to the side of their N. The legend repeats each curve's verdict.

    Args:
        curves: label ('vgg16' or 'vgg16, from scratch') -> that curve's summary; all of one metric.
        title: the figure's title (design and data).
        path: where to save the PNG, if anywhere.
    """
    metrics = {s.metric for s in curves.values()}
    if len(metrics) > 1:
        raise ValueError(f"one learning-curve figure shows one metric, got {sorted(metrics)}")
    fig = Figure(figsize=(_WIDTH, 5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors(list(curves))
    for i, (label, s) in enumerate(curves.items()):
        color = colors[label]
        # Each network's points a little to the side (a constant factor on the log axis), so error bars stay apart.
        shift = 2 ** (0.08 * (i - (len(curves) - 1) / 2))
        ax.plot(s.points_n * shift, s.points_value, ".", color=color, alpha=0.25, markersize=4)
        ax.errorbar(s.n * shift, s.mean, yerr=[s.mean - s.ci_low, s.ci_high - s.mean], fmt="o", color=color, capsize=3,
                    markersize=5, label=f"{label}: {s.verdict}")
        # A curve that does not rise is not extrapolated (its verdict says so): fit and band over the data only.
        end = s.horizon if s.rises else s.n.max()
        if s.fit is not None:
            for start, stop, style in ((s.n.min(), s.n.max(), "-"), (s.n.max(), end, "--")):
                x = np.geomspace(start, stop, 32)
                ax.plot(x, learning_curve.pow3(x, *s.fit), style, color=color, linewidth=1.3)
        if np.isfinite(s.band_low).any():
            inside = s.grid <= end * (1 + 1e-9)
            ax.fill_between(s.grid[inside], s.band_low[inside], s.band_high[inside], color=color, alpha=0.12,
                            linewidth=0)
    for target in sorted({s.target for s in curves.values()}):
        ax.axhline(target, color="grey", linestyle=":", linewidth=1)
        ax.annotate(f"target {target:g}", (1, target), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter("{x:g}")
    ax.set_xlabel("training volumes (annotated), N")
    ax.set_ylabel("validation AUC" if metrics == {"auc"} else "validation accuracy")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    if path is not None:
        save(fig, path)
    return fig
