"""The vendor design (issue #24): each vendor of the records in turn is the test set; the others train, and a
grouped fold of their volumes validates. No vendor's volumes on two sides, never a validation on the test vendor."""

import dataclasses

import numpy as np
import pytest

from conftest import refusal
from octtl import runs, train
from octtl.data import converter, folds, records
from octtl.errors import InputError
from octtl.study import plan as planning
from octtl.synthetic import render
from octtl.training import session
from octtl.training.config import Config

VENDORS = ("cirrus", "spectralis", "topcon")  # sorted: fold k holds the k-th out
QUIET = dict(say=lambda line: None, progress=False)


def vendor_records(root, vendors=VENDORS, volumes=6, seed=1):
    """Synthetic volumes of each vendor (6 B-scans of 48 x 48: small, the vendors' folders and bit depths),
    converted; returns the records folder."""
    for vendor in vendors:
        render.write_dataset(root / "volumes", vendor=vendor, volumes=volumes, bscans=6, height=48, width=48,
                             seed=seed)
    converter.convert(root / "volumes", root / "records", progress=None)
    return root / "records"


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    return vendor_records(tmp_path_factory.mktemp("vendors"))


def tiny(records_dir, logdir, **changes) -> Config:
    values = dict(data_dir=str(records_dir), logdir=str(logdir), arch="tiny", batch=8, folds=5, image_size=32,
                  max_epochs=1, weights="none", design="vendor")
    return Config(**{**values, **changes})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_volume_on_two_sides_and_never_a_validation_on_the_test_vendor(records_dir, seed):
    meta = records.read_metadata(records_dir)
    assert folds.vendor_names(meta.vendors) == list(VENDORS)
    for fold, held_out in enumerate(VENDORS):
        split = folds.vendor_splits(meta.labels, meta.vendors, fold, 5, seed, meta.volume_ids)
        sides = (split.train, split.validation, split.test)
        assert sorted(np.concatenate(sides).tolist()) == list(range(len(meta)))  # a partition
        assert split.test_vendor == held_out and set(meta.vendors[split.test]) == {held_out}
        assert split.test.tolist() == np.flatnonzero(meta.vendors == held_out).tolist()  # every one of its B-scans
        others = set(VENDORS) - {held_out}
        # Each training vendor keeps its share in the validation fold (stratified by vendor and label).
        assert set(meta.vendors[split.train]) == set(meta.vendors[split.validation]) == others
        volumes = [set(meta.volume_ids[side]) for side in sides]
        assert not (volumes[0] & volumes[1] or volumes[0] & volumes[2] or volumes[1] & volumes[2])
        assert (split.train_folds, split.validation_folds, split.test_folds) == ([1, 2, 3, 4], [0], [fold])


def test_refusals_name_the_vendors():
    labels = np.array([0, 1] * 6)
    groups = np.repeat(np.arange(6), 2)
    with pytest.raises(InputError, match=r"^--design=vendor: the records hold one vendor \(spectralis\); leaving "
                                         "a vendor out needs at least two$"):
        folds.vendor_splits(labels, ["spectralis"] * 12, 0, 2, 0, groups)
    with pytest.raises(InputError, match=r"^--design=vendor: 4 B-scans have vendor unknown \(image folders"):
        folds.vendor_splits(labels, ["cirrus"] * 8 + ["unknown"] * 4, 0, 2, 0, groups)
    with pytest.raises(InputError, match=r"^--fold=2: the vendor design has one fold per vendor, 0..1 \(0 cirrus, "
                                         r"1 topcon\)$"):
        folds.vendor_splits(labels, ["topcon"] * 6 + ["cirrus"] * 6, 2, 2, 0, groups)
    with pytest.raises(ValueError, match="vendor_splits"):
        folds.splits(labels, "vendor", 0, 2)


@pytest.mark.parametrize("flags, message", [
    (["--nogroup_by_volume"], "--design=vendor: needs --group_by_volume (its validation fold is a grouped fold of "
                              "the training vendors' volumes)"),
    (["--test_fold=none"], "--design=vendor --test_fold=none: the vendor design's test set is the vendor it leaves "
                           "out; it has no run without one"),
])
def test_the_train_command_refuses_what_the_design_cannot_do(records_dir, tmp_path, flags, message):
    assert refusal(train, f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--arch=squeezenet", "--batch=8",
                   "--design=vendor", *flags) == message
    assert not list(tmp_path.iterdir())


def test_too_few_training_volumes_for_the_validation_fold_is_refused_before_decoding(records_dir, tmp_path):
    # 3 vendors of 6 volumes: 12 train when one is left out, too few for 13 grouped folds.
    message = refusal(train, f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--arch=squeezenet", "--batch=8",
                      "--design=vendor", "--folds=13", "--fold=-1")
    assert message == (f"{records_dir}: 13 folds grouped by volume need at least 13 volumes; there are 12 (the "
                       "vendor design's validation fold); use fewer --folds")
    assert not list(tmp_path.iterdir())


def test_one_vendor_is_refused_before_anything_is_decoded(tmp_path):
    one = vendor_records(tmp_path, vendors=("topcon",), volumes=3)
    said = []
    with pytest.raises(InputError, match=r"the records hold one vendor \(topcon\)"):
        session.Session(tiny(one, tmp_path / "runs"), say=said.append).run("vendor", 0)
    assert not any("decoded" in line for line in said) and not (tmp_path / "runs" / "vendor").exists()


def test_every_vendor_in_turn_with_its_name_recorded(records_dir, tmp_path):
    trainer = session.Session(tiny(records_dir, tmp_path), **QUIET)
    assert trainer.design_folds("vendor") == 3 and trainer.design_folds("baseline") == 5
    meta = records.read_metadata(records_dir)
    results = [trainer.run("vendor", fold) for fold in range(3)]
    for fold, (vendor, result) in enumerate(zip(VENDORS, results)):
        assert result["status"] == "ok" and result["fold"] == fold and result["test_vendor"] == vendor
        assert result["train_vendors"] == sorted(set(VENDORS) - {vendor}) and result["design_folds"] == 3
        assert result["test_size"] == int(np.sum(meta.vendors == vendor)) and result["test_fold"] == "auto"
        assert set(result["test_by_vendor"]) == {vendor}
        assert runs.summary_line(result).startswith(f"tiny vendor batch 8 fold {fold} (test vendor {vendor}): ")
        assert result["run_dir"].endswith(f"vendor/tiny/batch8/fold{fold}")
    # Done for the same plan; a stale reason is never "design" (the folder says it).
    assert trainer.run("vendor", 1)["skipped"]


def test_the_sweep_plans_one_fold_per_vendor(records_dir, tmp_path):
    base = dataclasses.replace(tiny(records_dir, tmp_path), arch="squeezenet", batch=8)
    plan = planning.build(base, ["squeezenet"], ["baseline", "vendor"], ["8"], tmp_path / "none.json")
    assert [(r.design, r.fold) for r in plan.runs] == [("baseline", k) for k in range(5)] + [
        ("vendor", k) for k in range(3)]
    with pytest.raises(InputError, match="--design=vendor: needs --group_by_volume"):
        planning.build(dataclasses.replace(base, group_by_volume=False), ["squeezenet"], ["vendor"], ["8"],
                       tmp_path / "none.json")
