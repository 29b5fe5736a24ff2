"""Stratified 10-fold splits and the paper's two experimental designs.

The paper (section II-A) splits the B-scans into 10 stratified folds and uses them
two ways: `baseline` trains on 9 folds and validates on the 10th (90/10); `limited`
trains on one fold and validates on the other 9 (10/90).

`group_by_volume` keeps every volume's B-scans in one fold. Neighbouring B-scans of
one eye are near-duplicates, so the paper's ungrouped split lets validation see
almost the same images as training; grouping removes that leak at the cost of folds
whose class ratios are only approximately stratified.
"""

from typing import Optional, Sequence

import numpy as np

from octtl.protocol import DESIGNS


def assign_folds(labels: Sequence[int], folds: int = 10, seed: int = 0,
                 groups: Optional[Sequence] = None) -> np.ndarray:
    """The fold number (0..folds-1) of each example, stratified by label, deterministic for a seed."""
    from sklearn import model_selection  # imported here so that entry modules' --help stays instant

    labels = np.asarray(labels)
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    counts = np.bincount(labels) if labels.size else np.array([0])
    if groups is None:
        if labels.size < folds or counts[counts > 0].min() < folds:
            raise ValueError(f"{folds} stratified folds need at least {folds} examples of each class; "
                             f"class counts are {counts.tolist()}")
        splitter = model_selection.StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels)
    else:
        groups = np.asarray(groups)
        if len(np.unique(groups)) < folds:
            raise ValueError(f"{folds} folds grouped by volume need at least {folds} volumes; "
                             f"there are {len(np.unique(groups))}")
        splitter = model_selection.StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(len(labels)), labels, groups)
    assignment = np.full(len(labels), -1, np.int64)
    for fold, (_, held_out) in enumerate(splits):
        assignment[held_out] = fold
    return assignment


def split(labels: Sequence[int], design: str, fold: int, folds: int = 10, seed: int = 0,
          groups: Optional[Sequence] = None):
    """(train indices, validation indices) of one fold under one design, each sorted.

    Args:
      labels: one class label per example.
      design: 'baseline' (train on all folds but `fold`) or 'limited' (train on `fold` only).
      fold: which fold, 0..folds-1.
      groups: volume id per example, to keep volumes whole; None for the paper's split.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    assignment = assign_folds(labels, folds, seed, groups)
    held_out = assignment == fold
    train, val = (~held_out, held_out) if design == "baseline" else (held_out, ~held_out)
    return np.flatnonzero(train), np.flatnonzero(val)
