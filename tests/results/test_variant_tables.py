"""octtl.results.variants: the variant table against numbers recomputed with scipy."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from octtl import protocol

from octtl.results import variants

def _result(arch, fold, acc, auc, lr=protocol.LR, design="limited", batch=16, **extra):
    return {"design": design, "arch": arch, "batch": batch, "fold": fold, "status": "ok", "lr": lr,
            "best_accuracy": acc, "best_auc": auc, "folds": 10, "train_size": 100, "val_size": 900, "seed": 0,
            "group_by_volume": False, "data": {"manifest_sha256": "abc", "num_examples": 1000}, **extra}


def _interval(values, ratio):
    """The corrected resampled t interval, written out (Nadeau and Bengio 2003)."""
    values = np.asarray(values, float)
    k = len(values)
    half = scipy_stats.t.ppf(0.975, k - 1) * math.sqrt((1 / k + ratio) * np.var(values, ddof=1))
    return max(values.mean() - half, 0), min(values.mean() + half, 1)


def test_variant_table_pairs_folds_with_the_default_and_recomputes():
    rng = np.random.default_rng(0)
    default_acc, default_auc = rng.uniform(0.6, 0.8, 10), rng.uniform(0.7, 0.9, 10)
    fast_acc, fast_auc = default_acc + rng.normal(0.03, 0.02, 10), default_auc + rng.normal(0.01, 0.03, 10)
    results = [_result("vgg16", k, default_acc[k], default_auc[k]) for k in range(10)]
    # lr 3e-4 lacks fold 4; its fold 7 has no AUC; one failed fold is left out.
    results += [_result("vgg16", k, fast_acc[k], None if k == 7 else fast_auc[k], lr=3e-4) for k in range(10) if k != 4]
    results += [{**_result("vgg16", 4, 0.0, 0.0, lr=3e-4), "status": "failed"}]
    # Variants along other axes stay out of the lr table.
    results += [_result("vgg16", k, 0.99, 0.99, augment=["flip"]) for k in range(10)]
    results += [_result("vgg16", k, 0.99, 0.99, lr=3e-4, denoise="median") for k in range(10)]
    rows = variants.variant_table(results, "lr")
    assert [(r.variant, r.value) for r in rows] == [("default", "0.0001"), ("lr0.0003", "0.0003")]
    default, fast = rows
    ratio = 900 / 100
    assert default.n_folds == 10 and default.n_paired == 0 and math.isnan(default.accuracy_p)
    assert default.accuracy_mean == pytest.approx(default_acc.mean())
    assert (default.accuracy_ci_low, default.accuracy_ci_high) == pytest.approx(_interval(default_acc, ratio))
    paired = [k for k in range(10) if k != 4]
    assert fast.n_folds == 9 and fast.n_paired == 9 and fast.n_auc == 8 and fast.n_paired_auc == 8
    assert fast.accuracy_mean == pytest.approx(fast_acc[paired].mean())
    assert (fast.accuracy_ci_low, fast.accuracy_ci_high) == pytest.approx(_interval(fast_acc[paired], ratio))
    with_auc = [k for k in paired if k != 7]
    assert (fast.auc_ci_low, fast.auc_ci_high) == pytest.approx(_interval(fast_auc[with_auc], ratio))
    assert fast.accuracy_diff == pytest.approx(np.mean(fast_acc[paired] - default_acc[paired]))
    assert fast.auc_diff == pytest.approx(np.mean(fast_auc[with_auc] - default_auc[with_auc]))
    assert fast.accuracy_p == pytest.approx(
        scipy_stats.wilcoxon(fast_acc[paired], default_acc[paired], zero_method="zsplit").pvalue)
    assert fast.auc_p == pytest.approx(
        scipy_stats.wilcoxon(fast_auc[with_auc], default_auc[with_auc], zero_method="zsplit").pvalue)
    assert fast.accuracy_p < 0.05


def test_variant_table_groups_by_design_network_and_batch_and_orders_rows():
    results = []
    for arch in ("resnet50", "alexnet"):
        for k in range(6):
            results.append(_result(arch, k, 0.7 + 0.01 * k, 0.8))
            results.append(_result(arch, k, 0.72 + 0.01 * k, 0.8, augment="shift,flip"))
            results.append(_result(arch, k, 0.6 + 0.01 * k, 0.8, augment=["speckle"], augment_strength=0.5))
    results.append(_result("alexnet", 0, 0.7, 0.8, design="baseline", augment=["flip"]))
    rows = variants.variant_table(results, "augment")
    assert [(r.design, r.arch, r.variant, r.value) for r in rows] == [
        ("baseline", "alexnet", "aug_flip", "flip"),
        ("limited", "alexnet", "default", "none"),
        ("limited", "alexnet", "aug_flip+shift", "flip+shift"),
        ("limited", "alexnet", "aug_speckle-augs0.5", "speckle at 0.5"),
        ("limited", "resnet50", "default", "none"),
        ("limited", "resnet50", "aug_flip+shift", "flip+shift"),
        ("limited", "resnet50", "aug_speckle-augs0.5", "speckle at 0.5")]
    lone = rows[0]
    assert lone.n_paired == 0 and math.isnan(lone.accuracy_diff) and math.isnan(lone.accuracy_ci_low)
    flip = rows[2]
    assert flip.accuracy_diff == pytest.approx(0.02) and flip.n_paired == 6
    assert flip.accuracy_p == pytest.approx(2 / 2 ** 6)  # every difference positive: the exact smallest p
    assert rows[3].accuracy_diff == pytest.approx(-0.1)


def test_folds_of_other_splits_do_not_pair():
    results = [_result("vgg16", k, 0.7, 0.8) for k in range(5)]
    results += [_result("vgg16", k, 0.8, 0.8, lr=3e-4, seed=1 if k < 2 else 0) for k in range(5)]
    fast = variants.variant_table(results, "lr")[1]
    assert fast.n_folds == 5 and fast.n_paired == 3 and math.isnan(fast.accuracy_p)  # fewer than 5 pairs


def test_denoise_axis_and_unknown_axis():
    results = [_result("vgg16", k, 0.7, 0.8) for k in range(5)]
    results += [_result("vgg16", k, 0.75, 0.8, denoise="nlm", denoise_strength=10) for k in range(5)]
    results += [_result("vgg16", k, 0.75, 0.8, denoise="nlm", denoise_strength=20) for k in range(5)]
    rows = variants.variant_table(results, "denoise")
    assert [(r.variant, r.value) for r in rows] == [("default", "none"), ("dn_nlm", "nlm"),
                                                    ("dn_nlm-dns020", "nlm 20")]
    with pytest.raises(ValueError, match="variant axis"):
        variants.variant_table(results, "batch")
