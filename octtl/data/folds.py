"""Stratified 10-fold splits and the paper's two experimental designs.

The paper (section II-A) splits the B-scans into 10 stratified folds and uses them
two ways: `baseline` trains on 9 folds and validates on the 10th (90/10); `limited`
trains on one fold and validates on the other 9 (10/90).

`group_by_volume` keeps every volume's B-scans in one fold. Neighbouring B-scans of
one eye are near-duplicates, so the paper's ungrouped split lets validation see
almost the same images as training; grouping removes that leak at the cost of folds
whose class ratios are only approximately stratified.

A held-out test fold (`splits(..., test=True)`) keeps the checkpoint's choice away from the data it is scored
on: in `baseline` fold i tests, fold i+1 (mod k) validates (the early stop and the best checkpoint are decided
there) and the other k-2 train; in `limited` fold i trains, fold i+1 validates and the other k-2 test. Without
it, the paper's split: the best checkpoint is picked and scored on the same validation fold.
"""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from octtl import protocol
from octtl.errors import InputError
from octtl.protocol import VENDOR

# The designs of k folds (the paper's); the vendor design's folds are the records' vendors (`vendor_splits`).
DESIGNS = tuple(design for design in protocol.DESIGNS if design != VENDOR)


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
    split_ = splits(labels, design, fold, folds, seed, groups)
    return split_.train, split_.validation


@dataclasses.dataclass(frozen=True)
class Split:
    """One fold of one design: training, validation and (with a held-out test fold) test indices, each sorted.

    Attributes:
        train, validation, test: Example indices (test is empty without a test fold).
        train_folds, validation_folds, test_folds: The fold numbers each side is made of.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    train_folds: List[int]
    validation_folds: List[int]
    test_folds: List[int]
    test_vendor: Optional[str] = None  # the vendor design's held-out vendor (`vendor_splits`)


def splits(labels: Sequence[int], design: str, fold: int, folds: int = 10, seed: int = 0,
           groups: Optional[Sequence] = None, test: bool = False) -> Split:
    """One fold of one design, with or without a held-out test fold (see the module docstring).

    Without `test` the sides are `split`'s exactly: the paper's protocol. A test fold needs at least 3 folds.
    """
    if design == VENDOR:
        raise ValueError("the vendor design's folds are its vendors: vendor_splits")
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}")
    if test and folds < 3:
        raise ValueError(f"a held-out test fold needs at least 3 folds, got {folds}")
    assignment = assign_folds(labels, folds, seed, groups)
    others = [k for k in range(folds) if k != fold]
    if not test:
        train_folds, validation_folds = (others, [fold]) if design == "baseline" else ([fold], others)
        test_folds = []
    else:
        following = (fold + 1) % folds
        rest = [k for k in range(folds) if k not in (fold, following)]
        if design == "baseline":
            train_folds, validation_folds, test_folds = rest, [following], [fold]
        else:
            train_folds, validation_folds, test_folds = [fold], [following], rest

    def members(chosen):
        return np.flatnonzero(np.isin(assignment, chosen))

    return Split(members(train_folds), members(validation_folds), members(test_folds), train_folds,
                 validation_folds, test_folds)


def volume_order(train_idx: Sequence[int], groups: Sequence, labels: Sequence[int], seed: int,
                 repeat: int) -> list:
    """Every training volume of a fold in the seeded random order that learning curves take them in.

    The first N volumes of this order are the N annotated volumes of a learning-curve point, so the sets of one
    fold and repeat are nested (the 4-volume set lies inside the 8-volume set) and differ between curve points
    only by the volumes added. The generator is seeded by (seed, repeat) alone, never by N, for that reason.

    The order cycles through the classes: each class has its own seeded random order of the volumes that hold
    it, and at a class's turn the next of its volumes not yet taken is appended. A volume is said to hold a class
    when any of its training examples has that label, so a volume holding several classes (a RETOUCH volume
    with fluid and normal B-scans, a patient imaged with two diseases) stands in the order of each and is taken
    once. After one turn of every class, each class has either just been given a volume or had all of its
    volumes taken already, so any N >= K (the number of classes in the training data) holds every class.
    When some volume holds every class, the order starts with one of them (drawn at random among those), so
    that N = 1 holds every class too. The classes' turn order is itself drawn, so with one class per volume
    and N not a multiple of K no class is always the one with the extra volume.

    Args:
      train_idx: the fold's training indices (into groups and labels).
      groups: volume (or patient) id of every example.
      labels: class label of every example.
      seed, repeat: the learning-curve study's seed and the repeat number; each repeat draws another order.

    Returns:
      The training volumes' ids (as in groups), in the order they are taken.
    """
    train_idx = np.asarray(train_idx, np.int64)
    volumes, volume_of = np.unique(np.asarray(groups)[train_idx], return_inverse=True)
    classes, class_of = np.unique(np.asarray(labels)[train_idx], return_inverse=True)
    holds = np.zeros((len(volumes), len(classes)), bool)  # holds[v, c]: volume v has an example of class c
    holds[volume_of.ravel(), class_of.ravel()] = True
    rng = np.random.default_rng([int(seed), int(repeat)])
    shuffled = rng.permutation(len(volumes))
    turns = rng.permutation(len(classes)).tolist()
    # Each class's volumes in the one shuffled order, so a volume of two classes keeps its place in both.
    queues = {c: shuffled[holds[shuffled, c]].tolist() for c in turns}
    heads = dict.fromkeys(turns, 0)
    whole = shuffled[holds[shuffled].all(axis=1)].tolist()
    order, taken = whole[:1], set(whole[:1])
    while len(order) < len(volumes):
        for c in turns:
            queue = queues[c]
            while heads[c] < len(queue) and queue[heads[c]] in taken:
                heads[c] += 1
            if heads[c] < len(queue):
                order.append(queue[heads[c]])
                taken.add(order[-1])
    return volumes[order].tolist()


def training_volumes(train_idx: Sequence[int], groups: Sequence, labels: Sequence[int], n: int, seed: int,
                     repeat: int, fold: Optional[int] = None) -> list:
    """The N annotated training volumes of one learning-curve point: the first N of `volume_order`.

    Whole volumes only, nested over N for one fold and repeat, every class present for N >= the number of
    classes (see `volume_order`). N = 1 is a volume that holds every class; a fold with none refuses it, as
    it refuses N beyond its training volumes, and N < 1.

    Args:
      train_idx: the fold's training indices (into groups and labels).
      groups: volume (or patient) id of every example.
      labels: class label of every example.
      n: how many volumes (--train_volumes).
      seed, repeat: the study's seed and the repeat number.
      fold: the fold number, named in error messages.

    Returns:
      The N volumes' ids, in the order they were taken.

    Raises:
      InputError: N < 1, N larger than the fold's training volumes, or N = 1 where no volume holds every class.
    """
    where = "the training folds" if fold is None else f"fold {fold}'s training folds"
    if n < 1:
        raise InputError(f"--train_volumes={n}: must be at least 1")
    order = volume_order(train_idx, groups, labels, seed, repeat)
    if n > len(order):
        raise InputError(f"--train_volumes={n}: {where} hold only {len(order)} volumes")
    if n == 1:
        labels = np.asarray(labels)[np.asarray(train_idx, np.int64)]
        first = labels[np.asarray(groups)[np.asarray(train_idx, np.int64)] == order[0]]
        k = len(np.unique(labels))
        if len(np.unique(first)) < k:  # the order starts with a volume of every class whenever there is one
            both = "both classes" if k == 2 else f"all {k} classes"
            which = "the training folds" if fold is None else f"fold {fold}"
            raise InputError(f"--train_volumes=1: no training volume of {which} holds {both}; use at least 2")
    return order[:n]


def subset_indices(train_idx: Sequence[int], groups: Sequence, volume_ids: Sequence) -> np.ndarray:
    """The training indices whose example belongs to one of `volume_ids`, sorted: a learning-curve point's data."""
    train_idx = np.asarray(train_idx, np.int64)
    keep = np.isin(np.asarray(groups)[train_idx], np.asarray(list(volume_ids)))
    return np.sort(train_idx[keep])


UNKNOWN_VENDOR = "unknown"  # records.Metadata's vendor of image folders and of volumes no geometry names


def vendor_names(vendors: Sequence[str]) -> List[str]:
    """The vendors of the records, sorted: fold k of the vendor design holds the k-th out.

    Raises:
      InputError: fewer than two vendors, or B-scans whose vendor is unknown (one line naming the flag).
    """
    vendors = np.asarray(vendors).astype(str)
    names = sorted(set(vendors.tolist()))
    if UNKNOWN_VENDOR in names:
        raise InputError(f"--design=vendor: {int(np.sum(vendors == UNKNOWN_VENDOR))} B-scans have vendor "
                         f"{UNKNOWN_VENDOR} (image folders, or volumes whose path and geometry name no vendor); the "
                         "vendor design needs every volume's vendor")
    if len(names) < 2:
        held = f"one vendor ({names[0]})" if names else "no vendor"
        raise InputError(f"--design=vendor: the records hold {held}; leaving a vendor out needs at least two")
    return names


def vendor_splits(labels: Sequence[int], vendors: Sequence[str], fold: int, folds: int = 10, seed: int = 0,
                  groups: Optional[Sequence] = None) -> Split:
    """Fold `fold` of the vendor design: the fold-th vendor (`vendor_names`) tests, the others train and validate.

    The validation set, which decides the early stop and the checkpoint, is fold 0 of `folds` folds of the other
    vendors' volumes, grouped by volume and stratified by vendor and label (each training vendor keeps its share
    there); folds 1.. train. Validating on the held-out vendor would choose the checkpoint by the very data it is
    scored on. No volume is on two sides, and the test vendor's volumes are on none but the test side.

    Args:
      labels, vendors, groups: per example: class label, vendor (records.Metadata.vendors), volume (or patient).
      fold: which vendor is held out, 0..len(vendor_names) - 1.
      folds: the grouped folds the other vendors' volumes are split into (one validates).

    Raises:
      InputError: too few or unknown vendors (`vendor_names`), a fold past the vendors, or no grouping.
      ValueError: fewer volumes of the other vendors than `folds` (assign_folds).
    """
    names = vendor_names(vendors)
    if not 0 <= fold < len(names):
        raise InputError(f"--fold={fold}: the vendor design has one fold per vendor, 0..{len(names) - 1} ("
                         + ", ".join(f"{k} {name}" for k, name in enumerate(names)) + ")")
    if groups is None:
        raise InputError("--design=vendor: needs --group_by_volume (its validation fold is a grouped fold of the "
                         "training vendors' volumes)")
    labels, vendors, groups = np.asarray(labels), np.asarray(vendors).astype(str), np.asarray(groups)
    test = np.flatnonzero(vendors == names[fold])
    rest = np.flatnonzero(vendors != names[fold])
    vendor_of = np.searchsorted(names, vendors[rest])
    strata = vendor_of * (int(labels.max()) + 1) + labels[rest]
    inner = assign_folds(strata, folds, seed, groups[rest])
    return Split(rest[inner != 0], rest[inner == 0], test, list(range(1, folds)), [0], [fold], names[fold])
