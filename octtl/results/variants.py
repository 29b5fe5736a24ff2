"""The variant tables: each setting of --lr, --augment, --denoise or --trainable against the defaults, fold by fold.

A variant's runs live in their own folder component (octtl.runs.variant_name); `variant_table` pairs each
variant's folds with the default's and gives their means, Nadeau-Bengio intervals and Wilcoxon tests. No
TensorFlow.
"""

import dataclasses
import math
from typing import Dict, List, Mapping, Sequence

import numpy as np

from octtl import runs
from octtl.results import stats, tables
from octtl.training import config

AXES = ("lr", "augment", "denoise", "trainable")
DEFAULT_LABEL = "default"


@dataclasses.dataclass
class VariantRow:
    """One variant along one axis for one (design, network, batch), against that group's default variant.

    Attributes:
        variant: Its folder name, or "default".
        value: The axis's setting in words: `0.0003`, `flip+shift` (`flip+shift at 0.5`), `nlm` (`nlm 12`).
        n_folds: Its ok folds (the mean and interval are over these).
        n_paired: Folds it shares with the default (same fold index, same splits); 0 for the default itself.
        accuracy_ci_low, accuracy_ci_high, auc_ci_low, auc_ci_high: Nadeau-Bengio 95% interval of the mean.
        accuracy_diff, auc_diff: Mean of (variant - default) over the paired folds.
        accuracy_p, auc_p: Two-sided Wilcoxon signed-rank p against the default over the paired folds; NaN with
            fewer than octtl.results.stats.MIN_FOLDS of them.
        estimate: 'test' when every run of the group held a test fold out (these figures are the test
            folds'), else 'validation' (the paper's).
    """

    design: str
    arch: str
    batch: int
    axis: str
    variant: str
    value: str
    n_folds: int
    n_paired: int
    accuracy_mean: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    auc_mean: float
    auc_ci_low: float
    auc_ci_high: float
    n_auc: int
    accuracy_diff: float
    accuracy_p: float
    auc_diff: float
    auc_p: float
    n_paired_auc: int
    estimate: str = "validation"

    @property
    def is_default(self) -> bool:
        """Whether this row is its group's default variant."""
        return self.variant == DEFAULT_LABEL


def _variant(result: Mapping, defaults: Mapping) -> dict:
    """A result's variant in the one spelling, whoever wrote the result (a denoising default strength is None)."""
    return config.normalize(**runs.variant_of(result, defaults))


def _value(axis: str, v: dict) -> str:
    if axis == "lr":
        return np.format_float_positional(v["lr"], trim="-")
    if axis == "augment":
        words = "+".join(v["augment"]) or "none"
        return words + (f" at {v['augment_strength']:g}" if v["augment"] and v["augment_strength"] != 1 else "")
    if axis == "trainable":  # against `all`, the paper's fine-tuning of every layer
        return v["trainable"]
    strength = v["denoise_strength"]
    return v["denoise"] + ("" if strength is None else f" {strength:g}")


def variant_table(results: Sequence[Mapping], axis: str, defaults: Mapping = runs.VARIANT_DEFAULTS) -> List[VariantRow]:
    """Every variant along `axis` ('lr', 'augment', 'denoise' or 'trainable') against the default, per (design,
    arch, batch).

    Only ok results whose other axes are at their defaults take part. A variant's fold pairs with the
    default's fold of the same index when their splits are the same (octtl.results.stats.pairing_key); a fold run twice
    counts once, the later result winning.

    Returns:
        Rows by design (the paper's order), network and batch, the default first, then by variant name.
    """

    if axis not in AXES:
        raise ValueError(f"variant axis must be one of {AXES}, got {axis!r}")
    reference = _variant(defaults, defaults)
    others = {"lr": ("lr",), "augment": ("augment", "augment_strength"),
              "denoise": ("denoise", "denoise_strength"), "trainable": ("trainable",)}
    groups: Dict[tuple, Dict[str, Dict[int, Mapping]]] = {}
    described: Dict[str, dict] = {}
    for r in results:
        if r.get("status") != "ok" or runs.variant_of(r)["train_volumes"] != "all" or r.get("task", "fluid") != "fluid":
            continue  # learning-curve points and other tasks have their own sections
        v = _variant(r, defaults)
        if any(v[key] != reference[key] for other in AXES if other != axis for key in others[other]):
            continue
        label = runs.variant_name(**v, defaults=defaults) or DEFAULT_LABEL
        described[label] = v
        folds = groups.setdefault((r["design"], r["arch"], int(r["batch"])), {}).setdefault(label, {})
        folds[int(r["fold"])] = r
    rows = []
    for (design, arch, batch), variants in groups.items():
        baseline = variants.get(DEFAULT_LABEL, {})
        # The held-out test folds' figures where every run of the group has them, else the validation's.
        on = tables.estimate([r for folds in variants.values() for r in folds.values()])
        for label, folds in variants.items():
            rows.append(_row(design, arch, batch, axis, label, _value(axis, described[label]), folds, baseline, on))
    order = {d: i for i, d in enumerate(tables.DESIGNS)}
    rows.sort(key=lambda row: (order.get(row.design, len(order)), row.design, row.arch, row.batch,
                               not row.is_default, row.variant))
    return rows


def _row(design, arch, batch, axis, label, value, folds: Dict[int, Mapping],
         baseline: Dict[int, Mapping], on: str) -> VariantRow:

    ok = [folds[k] for k in sorted(folds)]
    accuracy_field, auc_field, _ = tables.ESTIMATES[on]
    accuracy = [r[accuracy_field] for r in ok]
    aucs = [r[auc_field] for r in ok if r.get(auc_field) is not None]
    ratio = tables.test_train_ratio(ok, design, max(int(r.get("folds", len(ok))) for r in ok), on)
    paired = [] if label == DEFAULT_LABEL else [
        (folds[k], baseline[k]) for k in sorted(folds)
        if k in baseline and stats.pairing_key(folds[k]) == stats.pairing_key(baseline[k])]
    accuracy_diff, accuracy_p, _ = _compare([(a[accuracy_field], b[accuracy_field]) for a, b in paired])
    auc_diff, auc_p, n_paired_auc = _compare([(a[auc_field], b[auc_field]) for a, b in paired
                                             if a.get(auc_field) is not None and b.get(auc_field) is not None])
    return VariantRow(design, arch, batch, axis, label, value, len(ok), len(paired),
                      _mean(accuracy), *stats.corrected_interval(accuracy, ratio, bounds=(0, 1)),
                      _mean(aucs), *stats.corrected_interval(aucs, ratio, bounds=(0, 1)), len(aucs),
                      accuracy_diff, accuracy_p, auc_diff, auc_p, n_paired_auc, on)


def _compare(pairs) -> tuple:
    """(mean of variant - default, Wilcoxon p, pairs) of (variant, default) score pairs."""

    if not pairs:
        return math.nan, math.nan, 0
    a, b = np.array(pairs, float).T
    p = stats.wilcoxon(a, b).pvalue if len(pairs) >= stats.MIN_FOLDS else math.nan
    return float(np.mean(a - b)), p, len(pairs)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan
