"""Learning-curve points: N whole training volumes, nested over N, paired over N, the same number of updates."""

import csv
import dataclasses

import numpy as np
import pytest

from conftest import call_main, synthetic_records
from octtl import runs, train
from octtl.data import records
from octtl.errors import InputError
from octtl.study import plan
from octtl.training import session
from octtl.training.config import Config

QUIET = dict(say=lambda line: None, progress=False)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """10 synthetic volumes of 8 B-scans (fluid and normal B-scans in each), 48 x 48."""
    return synthetic_records(tmp_path_factory.mktemp("curve"), volumes=10, bscans=8, height=48, width=48, seed=4)


@pytest.fixture(scope="module")
def curve(records_dir, tmp_path_factory):
    """Fold 0's points at 1, 2 and 4 volumes (two repeats of 2) and its whole-folds run, from one session."""
    config = Config(data_dir=str(records_dir), logdir=str(tmp_path_factory.mktemp("runs")), arch="tiny", batch=8,
                    folds=5, image_size=32, max_epochs=2, weights="none")
    one = session.Session(config, **QUIET)
    points = {(n, r): one.run("baseline", 0, train_volumes=n, repeat=r)
              for n, r in (("1", 0), ("2", 0), ("4", 0), ("2", 1))}
    return config, points, one.run("baseline", 0)


def _keys(folder, name):
    with open(folder / name, newline="") as f:
        return [(r["volume_id"], r["slice"]) for r in csv.DictReader(f)]


def test_points_are_nested_whole_volumes_of_the_training_folds(curve, records_dir):
    config, points, whole = curve
    ids = {key: set(r["train_volume_ids"]) for key, r in points.items()}
    assert ids[("1", 0)] < ids[("2", 0)] < ids[("4", 0)]  # nested: each point adds volumes to the one before
    assert ids[("2", 1)] != ids[("2", 0)]  # another repeat, another draw
    meta = records.read_metadata(records_dir)
    split = session.splits(config, meta, "baseline", 0)
    assert ids[("4", 0)] <= set(meta.volume_ids[split.train])
    for (n, _), r in points.items():
        assert len(r["train_volume_ids"]) == int(n) == r["train_volume_count"]
        mine = np.isin(meta.volume_ids, r["train_volume_ids"])
        assert r["train_size"] == int(mine.sum())  # whole volumes: every B-scan of each
        assert set(meta.labels[mine]) == {0, 1}  # every class, even from one volume


def test_points_are_paired_and_get_the_same_updates(curve):
    config, points, whole = curve
    budget = whole["steps_per_epoch"] * config.max_epochs
    for (n, r), result in points.items():
        folder = runs.Run("baseline", "tiny", 8, 0, f"vol{n}-rep{r}").folder(config.logdir)
        assert result["run_dir"] == str(folder)
        # The same validation and test B-scans as the whole-folds run: points differ only by their training data.
        for name in (runs.PREDICTIONS, runs.TEST_PREDICTIONS):
            assert _keys(folder, name) == _keys(runs.Run("baseline", "tiny", 8, 0).folder(config.logdir), name)
        assert (result["val_size"], result["test_size"]) == (whole["val_size"], whole["test_size"])
        # The whole folds' iterations and checks, whatever N: a small N is not also a handful of updates.
        assert result["iteration_budget"] == budget and result["steps_per_epoch"] == whole["steps_per_epoch"]
        assert [c["iteration"] for c in result["checks"]] == [c["iteration"] for c in whole["checks"]][
            :len(result["checks"])]
        assert result["train_batch"] == min(8, result["train_size"])
        assert (result["train_volumes"], result["repeat"]) == (int(n), r)
    assert (whole["train_volumes"], whole["repeat"]) == ("all", 0) and "train_volume_ids" not in whole


@pytest.mark.parametrize("args, message", [
    (["--design=limited", "--train_volumes=2"], "--train_volumes=2: the limited design trains on one fold"),
    (["--nogroup_by_volume", "--train_volumes=2"], "--train_volumes=2: needs --group_by_volume"),
    (["--train_volumes=two"], "--train_volumes=two: all, or a whole number of volumes >= 1"),
    (["--train_volumes=50"], "--train_volumes=50: fold 0's training folds hold only 6 volumes"),
])
def test_impossible_points_are_refused_in_one_line(records_dir, tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        call_main(train, f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--arch=squeezenet", "--batch=8",
                  "--image_size=32", "--folds=5", "--weights=none", *args)
    text = str(exit_info.value.code)
    assert text.startswith("train: error: ") and message in text and "\n" not in text, text
    assert not any(tmp_path.iterdir())


def test_the_sweep_axis_multiplies_the_plan_and_shares_sessions(records_dir):
    base = dataclasses.replace(Config(data_dir=str(records_dir), logdir="runs", arch="squeezenet", batch=1,
                                      folds=5), save_model=False)
    built = plan.build(base, ["squeezenet", "mobilenetv2"], ["baseline"], ["8"], "none.json",
                       train_volume_counts=["1", "4", "all"], repeats=2)
    variants = sorted({r.variant for r in built.runs})
    assert variants == ["", "vol1-rep0", "vol1-rep1", "vol4-rep0", "vol4-rep1"]
    assert len(built.runs) == 2 * 5 * 5  # networks x points x folds
    groups = plan.groups(built.runs)
    assert sorted(groups) == [("mobilenetv2", 8, ""), ("squeezenet", 8, "")]  # one session per network x batch
    assert built.config(next(r for r in built.runs if r.variant == "vol4-rep1")).volumes == 4
    with pytest.raises(InputError, match="learning curves draw volumes from the baseline design"):
        plan.build(base, ["squeezenet"], ["baseline", "limited"], ["8"], "none.json", train_volume_counts=["2"])
    with pytest.raises(InputError, match="--train_volume_counts=2,x: numbers of volumes >= 1, or all"):
        plan.build(base, ["squeezenet"], ["baseline"], ["8"], "none.json", train_volume_counts=["2", "x"])
