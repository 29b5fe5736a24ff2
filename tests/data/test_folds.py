"""Tests of octtl/data/folds.py: stratified folds, the two designs, grouping by volume."""

import numpy as np
import pytest

from octtl.data import folds


def paper_like_labels(seed=0):
    """1176 labels, 711 fluid and 465 normal as in the paper, in 24 volumes of 49 B-scans."""
    rng = np.random.default_rng(seed)
    labels = np.array([1] * 711 + [0] * 465)
    rng.shuffle(labels)
    groups = np.repeat([f"TRAIN{25 + v:03d}" for v in range(24)], 49)
    return labels, groups


@pytest.mark.parametrize("grouped", [False, True])
def test_folds_partition_everything(grouped):
    labels, groups = paper_like_labels()
    assignment = folds.assign_folds(labels, 10, seed=0, groups=groups if grouped else None)
    assert assignment.min() == 0 and assignment.max() == 9
    held_out = [np.flatnonzero(assignment == f) for f in range(10)]
    assert sum(len(h) for h in held_out) == len(labels)
    assert len(np.unique(np.concatenate(held_out))) == len(labels)


def test_ungrouped_folds_are_stratified_within_one_example():
    labels, _ = paper_like_labels()
    assignment = folds.assign_folds(labels, 10, seed=3)
    for fold in range(10):
        members = labels[assignment == fold]
        for cls, total in ((0, 465), (1, 711)):
            assert abs((members == cls).sum() - total / 10) <= 1


@pytest.mark.parametrize("design, train_folds", [("baseline", 9), ("limited", 1)])
def test_baseline_trains_on_nine_folds_and_limited_on_one(design, train_folds):
    labels, _ = paper_like_labels()
    assignment = folds.assign_folds(labels, 10, seed=0)
    for fold in (0, 7):
        train, val = folds.split(labels, design, fold, 10, seed=0)
        assert len(np.intersect1d(train, val)) == 0
        assert len(train) + len(val) == len(labels)
        assert sorted(np.unique(assignment[train]).tolist()) == (
            [f for f in range(10) if f != fold] if design == "baseline" else [fold])
        assert abs(len(train) / len(labels) - train_folds / 10) < 0.01


def test_grouped_split_shares_no_volume():
    labels, groups = paper_like_labels()
    for design in folds.DESIGNS:
        for fold in range(10):
            train, val = folds.split(labels, design, fold, 10, seed=1, groups=groups)
            assert not set(groups[train]) & set(groups[val])
    # The paper's ungrouped split does share volumes: that is the leak grouping removes.
    train, val = folds.split(labels, "baseline", 0, 10, seed=1)
    assert set(groups[train]) & set(groups[val])


def test_deterministic_for_seed_and_different_across_seeds():
    labels, groups = paper_like_labels()
    for g in (None, groups):
        a = folds.assign_folds(labels, 10, seed=5, groups=g)
        np.testing.assert_array_equal(a, folds.assign_folds(labels, 10, seed=5, groups=g))
        assert not np.array_equal(a, folds.assign_folds(labels, 10, seed=6, groups=g))


@pytest.mark.parametrize("kwargs, message", [
    (dict(design="other", fold=0), "design must be one of"),
    (dict(design="baseline", fold=10), "fold must be in 0..9"),
])
def test_bad_arguments(kwargs, message):
    labels, _ = paper_like_labels()
    with pytest.raises(ValueError, match=message):
        folds.split(labels, **kwargs)


def test_too_few_examples_or_volumes():
    with pytest.raises(ValueError, match="at least 10 examples of each class"):
        folds.assign_folds([0] * 30 + [1] * 5, 10)
    with pytest.raises(ValueError, match="at least 10 volumes"):
        folds.assign_folds([0, 1] * 20, 10, groups=[i % 4 for i in range(40)])


# Learning curves over annotated volumes: which N volumes a curve point trains on.

def one_class_patients(patients=20, per_patient=5, classes=2):
    """Image-set layout: every patient's images share one class (patient i has class i % classes)."""
    groups = np.repeat([f"P{p:03d}" for p in range(patients)], per_patient)
    labels = np.repeat(np.arange(patients) % classes, per_patient)
    return groups, labels


def retouch_like(volumes=24, bscans=49, seed=0):
    """RETOUCH layout: most volumes hold fluid and normal B-scans; volumes 0-2 only normal, 3 only fluid."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, volumes * bscans)
    labels[:3 * bscans] = 0
    labels[3 * bscans:4 * bscans] = 1
    groups = np.repeat([f"TRAIN{v:03d}" for v in range(volumes)], bscans)
    return groups, labels


def test_curve_sets_are_nested_whole_training_volumes():
    # One volume only where volumes hold both classes (see the refusal below).
    for (groups, labels), sizes in ((retouch_like(), (1, 2, 4, 8)), (one_class_patients(40), (2, 4, 8))):
        train, _ = folds.split(labels, "baseline", 2, 5, seed=0, groups=groups)
        for seed in (0, 1, 7):
            for repeat in (0, 1, 2):
                sets = [folds.training_volumes(train, groups, labels, n, seed, repeat, fold=2) for n in sizes]
                assert [len(s) for s in sets] == list(sizes)
                for smaller, larger in zip(sets, sets[1:]):  # nested: a larger set only adds volumes
                    assert larger[:len(smaller)] == smaller
                assert len(set(sets[-1])) == 8 and set(sets[-1]) <= set(groups[train])
                kept = folds.subset_indices(train, groups, sets[-2])
                # Whole volumes: every training example of a chosen volume, nothing else.
                assert set(groups[kept]) == set(sets[-2])
                assert len(kept) == np.isin(groups[train], sets[-2]).sum()
                assert set(kept) <= set(train) and np.all(np.diff(kept) > 0)


def test_one_volume_is_the_first_of_the_larger_sets_where_volumes_hold_both_classes():
    groups, labels = retouch_like()
    train = np.arange(len(labels))
    for seed, repeat in [(0, 0), (3, 1), (5, 2)]:
        one = folds.training_volumes(train, groups, labels, 1, seed, repeat)
        assert len(set(labels[np.isin(groups, one)])) == 2  # never one of the single-class volumes 0-3
        assert one == folds.training_volumes(train, groups, labels, 8, seed, repeat)[:1]


def test_repeats_and_seeds_draw_different_orders_deterministically():
    groups, labels = retouch_like()
    train = np.arange(len(labels))
    order = folds.volume_order(train, groups, labels, seed=0, repeat=0)
    assert sorted(order) == sorted(set(groups.tolist()))
    assert order == folds.volume_order(train, groups, labels, seed=0, repeat=0)
    others = [folds.volume_order(train, groups, labels, seed, repeat) for seed, repeat in [(0, 1), (0, 2), (1, 0)]]
    assert all(other != order for other in others)
    assert others[0] != others[1]


@pytest.mark.parametrize("classes", [2, 3, 4])
def test_every_class_is_present_from_as_many_volumes_as_classes(classes):
    groups, labels = one_class_patients(patients=12 * classes, classes=classes)
    train, _ = folds.split(labels, "baseline", 0, 5, seed=0, groups=groups)
    for seed in range(5):
        for repeat in range(3):
            for n in range(classes, classes + 4):
                chosen = folds.training_volumes(train, groups, labels, n, seed, repeat)
                assert len(set(labels[np.isin(groups, chosen)])) == classes, (seed, repeat, n)


def test_every_class_is_present_from_k_volumes_where_some_hold_several():
    # Three classes; patients hold {0, 1}, {1, 2}, {0} or {2}, none all three: the round-robin over classes still
    # gives every class a volume within one turn of each.
    groups = np.repeat([f"P{p:02d}" for p in range(16)], 4)
    kinds = [[0, 0, 1, 1], [1, 1, 2, 2], [0, 0, 0, 0], [2, 2, 2, 2]]
    labels = np.concatenate([kinds[p % 4] for p in range(16)])
    train = np.arange(len(labels))
    for seed in range(10):
        for repeat in range(3):
            chosen = folds.training_volumes(train, groups, labels, 3, seed, repeat)
            assert set(labels[np.isin(groups, chosen)]) == {0, 1, 2}, (seed, repeat)


def test_one_volume_is_refused_where_no_volume_holds_both_classes():
    groups, labels = one_class_patients()
    train = np.arange(len(labels))
    with pytest.raises(ValueError, match=r"^--train_volumes=1: no training volume of fold 4 holds both classes; "
                                         r"use at least 2$"):
        folds.training_volumes(train, groups, labels, 1, seed=0, repeat=0, fold=4)
    assert len(folds.training_volumes(train, groups, labels, 2, seed=0, repeat=0, fold=4)) == 2


@pytest.mark.parametrize("n, message", [
    (0, r"^--train_volumes=0: must be at least 1$"),
    (-3, r"^--train_volumes=-3: must be at least 1$"),
    (17, r"^--train_volumes=17: fold 1's training folds hold only 16 volumes$"),
])
def test_impossible_volume_counts_are_refused_naming_the_largest_possible(n, message):
    groups, labels = one_class_patients(patients=20)
    train, _ = folds.split(labels, "baseline", 1, 5, seed=0, groups=groups)
    assert len(set(groups[train])) == 16
    with pytest.raises(ValueError, match=message):
        folds.training_volumes(train, groups, labels, n, seed=0, repeat=0, fold=1)
    assert len(folds.training_volumes(train, groups, labels, 16, seed=0, repeat=0, fold=1)) == 16
