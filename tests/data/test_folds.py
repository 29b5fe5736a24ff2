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
def test_designs(design, train_folds):
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
