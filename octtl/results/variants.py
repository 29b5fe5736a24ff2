"""Variants of the training settings (--lr, --augment, --denoise): their run-folder names and their comparison.

A run's folder gains one path component for its variant, between the batch and the fold, only when the variant
differs from the defaults: `batch16/lr0.0003-aug_flip+shift/fold0`. The component lists, in this fixed order and
joined by "-", only what differs:
  lr<lr>                 the learning rate, e.g. lr0.0003
  aug_<a>+<b>            the augmentations in alphabetical order (aug_none when the defaults have some)
  augs<strength>         --augment_strength, when augmenting at other than the default strength
  dn_<method>            --denoise
  dns<strength>          --denoise_strength, when other than the method's default (octtl.data.denoise)
Numbers are written in plain decimals (no exponent, no trailing zeros); a denoising strength's whole part has
three digits (dns003, dns012, dns025.5), so that names sort by value: learning rates and augmentation strengths
below 10 and denoising strengths below 1000 do. Every setting has one name (`parse_variant` refuses any other
spelling), so one variant never gets two folders.

`variant_table` compares the variants along one axis with the default, fold by fold. No TensorFlow.
"""

import dataclasses
import math
import re
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from octtl import protocol

from octtl.data import denoise
from octtl.errors import InputError

AXES = ("lr", "augment", "denoise")
# The settings a run has without --lr, --augment and --denoise; a denoising strength defaults to its method's.
DEFAULTS = {"lr": protocol.LR, "augment": (), "augment_strength": 1.0, "denoise": "none"}
DEFAULT_LABEL = "default"
SEPARATOR = "-"
_NUMBER = r"(\d+(?:\.\d+)?)"
# (setting, pattern) in the order components are written.
_COMPONENTS = (("lr", re.compile(rf"lr{_NUMBER}")),
               ("augment", re.compile(r"aug_([a-z]+(?:\+[a-z]+)*)")),
               ("augment_strength", re.compile(rf"augs{_NUMBER}")),
               ("denoise", re.compile(r"dn_([a-z]+)")),
               ("denoise_strength", re.compile(rf"dns{_NUMBER}")))
_WIDTH = {"lr": 1, "augment_strength": 1, "denoise_strength": 3}  # digits of the whole part


def normalize(lr: float, augment: Sequence[str], augment_strength: float, denoise_method: str,
              denoise_strength: Optional[float], defaults: Mapping = DEFAULTS) -> dict:
    """The one spelling of a variant's settings: augmentations sorted, strengths that change nothing dropped.

    An augmentation strength without augmentations becomes the default one; a denoising strength equal to its
    method's default (or with no denoising) becomes None.
    """
    augment = tuple(sorted(set(augment)))
    augment_strength = float(augment_strength) if augment else float(defaults["augment_strength"])
    if denoise_method == "none" or denoise_strength is None:
        denoise_strength = None
    elif float(denoise_strength) == float(denoise.DEFAULT_STRENGTH.get(denoise_method, math.nan)):
        denoise_strength = None
    else:
        denoise_strength = float(denoise_strength)
    return {"lr": float(lr), "augment": augment, "augment_strength": augment_strength,
            "denoise": denoise_method, "denoise_strength": denoise_strength}


def variant_name(lr: float, augment: Sequence[str], augment_strength: float, denoise: str,
                 denoise_strength: Optional[float], defaults: Mapping = DEFAULTS) -> Optional[str]:
    """The folder component of a variant (`lr0.0003-aug_flip+shift`); None for the defaults, which have none.

    Raises:
        ValueError: A number that is not finite and positive.
    """
    v = normalize(lr, augment, augment_strength, denoise, denoise_strength, defaults)
    parts = []
    if v["lr"] != float(defaults["lr"]):
        parts.append("lr" + _number(v["lr"], _WIDTH["lr"]))
    if v["augment"] != tuple(sorted(set(defaults["augment"]))):
        parts.append("aug_" + ("+".join(v["augment"]) or "none"))
    if v["augment"] and v["augment_strength"] != float(defaults["augment_strength"]):
        parts.append("augs" + _number(v["augment_strength"], _WIDTH["augment_strength"]))
    if v["denoise"] != defaults["denoise"]:
        parts.append("dn_" + v["denoise"])
    if v["denoise_strength"] is not None:
        parts.append("dns" + _number(v["denoise_strength"], _WIDTH["denoise_strength"]))
    return SEPARATOR.join(parts) or None


def _number(value: float, width: int) -> str:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"variant settings must be finite and > 0, got {value}")
    whole, _, fraction = np.format_float_positional(value, trim="-").partition(".")
    return whole.zfill(width) + ("." + fraction if fraction else "")


def parse_variant(name: str, defaults: Mapping = DEFAULTS) -> dict:
    """The settings a variant folder name stands for, as `normalize` writes them; `variant_name`'s inverse.

    Augmentation names are checked for their form only (octtl.data.augment, which knows them, needs TensorFlow).

    Raises:
        InputError: A name that is not a variant's one spelling (one line naming it).
    """
    values = {}
    parts = name.split(SEPARATOR) if name else []
    position = 0
    for part in parts:
        for position in range(position, len(_COMPONENTS) + 1):
            if position == len(_COMPONENTS):
                raise InputError(f"{name}: not a variant folder name ({part!r} is not one of lr, aug_, augs, "
                                 "dn_, dns, in that order)")
            key, pattern = _COMPONENTS[position]
            match = pattern.fullmatch(part)
            if match:
                values[key] = match.group(1)
                position += 1
                break
    if not values:
        raise InputError(f"{name!r}: not a variant folder name (empty)")
    augment = values.get("augment")
    settings = {
        "lr": float(values.get("lr", defaults["lr"])),
        "augment": (tuple(defaults["augment"]) if augment is None else
                    () if augment == "none" else tuple(augment.split("+"))),
        "augment_strength": float(values.get("augment_strength", defaults["augment_strength"])),
        "denoise": values.get("denoise", defaults["denoise"]),
        "denoise_strength": float(values["denoise_strength"]) if "denoise_strength" in values else None,
    }
    if settings["denoise"] not in denoise.METHODS:
        raise InputError(f"{name}: not a variant folder name (unknown denoising method {settings['denoise']!r})")
    try:
        denoise.check(settings["denoise"], settings["denoise_strength"])
        canonical = variant_name(**settings, defaults=defaults)
    except (InputError, ValueError) as e:
        raise InputError(f"{name}: not a variant folder name ({e})") from None
    if canonical != name:
        written = "the defaults, which have no variant folder" if canonical is None else canonical
        raise InputError(f"{name}: not a variant folder name (these settings are written {written})")
    return normalize(*settings.values(), defaults)


def variant_of(result: Mapping, defaults: Mapping = DEFAULTS) -> dict:
    """A result's variant, normalized; settings a result does not record (older runs) are the defaults.

    Reads result.json's `lr`, `augment` (a list of names, or a comma string), `augment_strength`, `denoise` and
    `denoise_strength`.
    """
    augment = result.get("augment", defaults["augment"]) or ()
    if isinstance(augment, str):
        augment = [a.strip() for a in augment.split(",") if a.strip() and a.strip() != "none"]
    return normalize(result.get("lr", defaults["lr"]), augment,
                     result.get("augment_strength", defaults["augment_strength"]),
                     result.get("denoise", defaults["denoise"]), result.get("denoise_strength"), defaults)


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

    @property
    def is_default(self) -> bool:
        """Whether this row is its group's default variant."""
        return self.variant == DEFAULT_LABEL


def _value(axis: str, v: dict) -> str:
    if axis == "lr":
        return np.format_float_positional(v["lr"], trim="-")
    if axis == "augment":
        words = "+".join(v["augment"]) or "none"
        return words + (f" at {v['augment_strength']:g}" if v["augment"] and v["augment_strength"] != 1 else "")
    strength = v["denoise_strength"]
    return v["denoise"] + ("" if strength is None else f" {strength:g}")


def variant_table(results: Sequence[Mapping], axis: str, defaults: Mapping = DEFAULTS) -> List[VariantRow]:
    """Every variant along `axis` ('lr', 'augment' or 'denoise') against the default, per (design, arch, batch).

    Only ok results whose other two axes are at their defaults take part. A variant's fold pairs with the
    default's fold of the same index when their splits are the same (octtl.results.stats.pairing_key); a fold run twice
    counts once, the later result winning.

    Returns:
        Rows by design (the paper's order), network and batch, the default first, then by variant name.
    """
    from octtl.results import tables  # the report's: naming variants needs neither

    if axis not in AXES:
        raise ValueError(f"variant axis must be one of {AXES}, got {axis!r}")
    reference = normalize(defaults["lr"], defaults["augment"], defaults["augment_strength"], defaults["denoise"],
                          None, defaults)
    others = {"lr": ("lr",), "augment": ("augment", "augment_strength"),
              "denoise": ("denoise", "denoise_strength")}
    groups: Dict[tuple, Dict[str, Dict[int, Mapping]]] = {}
    described: Dict[str, dict] = {}
    for r in results:
        if r.get("status") != "ok":
            continue
        v = variant_of(r, defaults)
        if any(v[key] != reference[key] for other in AXES if other != axis for key in others[other]):
            continue
        label = variant_name(**v, defaults=defaults) or DEFAULT_LABEL
        described[label] = v
        folds = groups.setdefault((r["design"], r["arch"], int(r["batch"])), {}).setdefault(label, {})
        folds[int(r["fold"])] = r
    rows = []
    for (design, arch, batch), variants in groups.items():
        baseline = variants.get(DEFAULT_LABEL, {})
        for label, folds in variants.items():
            rows.append(_row(design, arch, batch, axis, label, _value(axis, described[label]), folds, baseline))
    order = {d: i for i, d in enumerate(tables.DESIGNS)}
    rows.sort(key=lambda row: (order.get(row.design, len(order)), row.design, row.arch, row.batch,
                               not row.is_default, row.variant))
    return rows


def _row(design, arch, batch, axis, label, value, folds: Dict[int, Mapping],
         baseline: Dict[int, Mapping]) -> VariantRow:
    from octtl.results import stats
    from octtl.results import tables  # the report's: naming variants needs neither

    ok = [folds[k] for k in sorted(folds)]
    accuracy = [r["best_accuracy"] for r in ok]
    aucs = [r["best_auc"] for r in ok if r.get("best_auc") is not None]
    ratio = tables.test_train_ratio(ok, design, max(int(r.get("folds", len(ok))) for r in ok))
    paired = [] if label == DEFAULT_LABEL else [
        (folds[k], baseline[k]) for k in sorted(folds)
        if k in baseline and stats.pairing_key(folds[k]) == stats.pairing_key(baseline[k])]
    accuracy_diff, accuracy_p, _ = _compare([(a["best_accuracy"], b["best_accuracy"]) for a, b in paired])
    auc_diff, auc_p, n_paired_auc = _compare([(a["best_auc"], b["best_auc"]) for a, b in paired
                                             if a.get("best_auc") is not None and b.get("best_auc") is not None])
    return VariantRow(design, arch, batch, axis, label, value, len(ok), len(paired),
                      _mean(accuracy), *stats.corrected_interval(accuracy, ratio, bounds=(0, 1)),
                      _mean(aucs), *stats.corrected_interval(aucs, ratio, bounds=(0, 1)), len(aucs),
                      accuracy_diff, accuracy_p, auc_diff, auc_p, n_paired_auc)


def _compare(pairs) -> tuple:
    """(mean of variant - default, Wilcoxon p, pairs) of (variant, default) score pairs."""
    from octtl.results import stats  # the report's: naming variants needs neither

    if not pairs:
        return math.nan, math.nan, 0
    a, b = np.array(pairs, float).T
    p = stats.wilcoxon(a, b).pvalue if len(pairs) >= stats.MIN_FOLDS else math.nan
    return float(np.mean(a - b)), p, len(pairs)


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else math.nan
