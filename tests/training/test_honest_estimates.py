"""Honest estimates by default: folds grouped by volume, and a held-out test fold the checkpoint never saw.

The paper's ruler stays one flagfile away (flags/paper_*.cfg: ungrouped, no test fold), and results written
before these settings existed read as the paper's, so they stay done for it.
"""

import csv
import dataclasses
import json
import math

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver
from scipy import stats as scipy_stats

from conftest import REPO, synthetic_records
from octtl import runs, sweep, train  # noqa: F401  (sweep: its flags, which paper_sweep.cfg sets)
from octtl.data import folds, records
from octtl.results import comparisons, tables
from octtl.training import session
from octtl.training.config import Config

QUIET = dict(say=lambda line: None, progress=False)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """10 synthetic volumes of 8 B-scans, 48 x 48: 80 examples."""
    return synthetic_records(tmp_path_factory.mktemp("honest"), volumes=10, bscans=8, height=48, width=48, seed=4)


def tiny(records_dir, logdir, **changes) -> Config:
    values = dict(data_dir=str(records_dir), logdir=str(logdir), arch="tiny", batch=8, folds=5, image_size=32,
                  max_epochs=2, weights="none")
    return Config(**{**values, **changes})


def _volumes(metadata, indices) -> set:
    return set(metadata.volume_ids[indices])


@pytest.mark.parametrize("design", ["baseline", "limited"])
def test_grouped_by_default_and_train_validation_test_disjoint(records_dir, design):
    assert (Config("d", "l", "tiny", 8).group_by_volume, Config("d", "l", "tiny", 8).test_fold) == (True, "auto")
    meta = records.read_metadata(records_dir)
    k = 5
    assignment = folds.assign_folds(meta.labels, k, 0, meta.volume_ids)
    for fold in range(k):
        split = folds.splits(meta.labels, design, fold, k, 0, meta.volume_ids, test=True)
        sides = (split.train, split.validation, split.test)
        assert sorted(np.concatenate(sides).tolist()) == list(range(len(meta)))  # a partition
        volumes = [_volumes(meta, side) for side in sides]
        assert not (volumes[0] & volumes[1] or volumes[0] & volumes[2] or volumes[1] & volumes[2])
        following, rest = (fold + 1) % k, [f for f in range(k) if f not in (fold, (fold + 1) % k)]
        expected = (rest, [following], [fold]) if design == "baseline" else ([fold], [following], rest)
        assert (split.train_folds, split.validation_folds, split.test_folds) == expected
        for side, members in zip(sides, expected):
            assert side.tolist() == np.flatnonzero(np.isin(assignment, members)).tolist()
    # Without a test fold, the paper's two sides, exactly as before.
    for fold in range(k):
        split = folds.splits(meta.labels, design, fold, k, 0, None)
        train_idx, val_idx = folds.split(meta.labels, design, fold, k, 0, None)
        assert split.test.size == 0 and (split.train.tolist(), split.validation.tolist()) == (
            train_idx.tolist(), val_idx.tolist())


@pytest.mark.parametrize("flagfile", ["paper_baseline.cfg", "paper_limited.cfg", "paper_sweep.cfg"])
def test_the_papers_flagfiles_keep_its_ruler(flagfile, monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles include each other by paths relative to the repository
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", f"--flagfile=flags/{flagfile}", "--arch=vgg16", "--batch=8"])
        config = train.config_from_flags()
    assert (config.group_by_volume, config.test_fold, config.held_out) == (False, "none", False)


def test_a_run_holds_its_test_fold_out_of_the_checkpoints_choice(records_dir, tmp_path, monkeypatch):
    """Permuting the test fold's labels changes its score, never which checkpoint was chosen."""
    config = tiny(records_dir, tmp_path / "a")
    first = session.Session(config, **QUIET)
    result = first.run("baseline", 0)
    assert result["test_size"] > 0 and result["test_accuracy"] is not None
    split = session.splits(config, first.metadata, "baseline", 0)

    other = session.Session(dataclasses.replace(config, logdir=str(tmp_path / "b")), **QUIET)
    other.prepare()
    labels = other.metadata.labels
    labels[split.test] = np.random.default_rng(0).permutation(1 - labels[split.test])  # flipped and shuffled
    other.targets[split.test] = labels[split.test]  # what the run scores (the labels, for the fluid task)
    monkeypatch.setattr(session, "splits", lambda *args: split)  # the same sides, whatever the labels now say
    permuted = other.run("baseline", 0)
    for key in ("iterations_to_best", "best_accuracy", "best_auc", "iterations", "checks"):
        assert permuted[key] == result[key], key
    folder = runs.Run("baseline", "tiny", 8, 0).folder
    assert ((folder(tmp_path / "a") / runs.PREDICTIONS).read_bytes()
            == (folder(tmp_path / "b") / runs.PREDICTIONS).read_bytes())
    # The same checkpoint scored on other labels: the test fold's probabilities are the same, its labels are not,
    # and each run's test accuracy is its own file's.
    tested = [_rows(folder(tmp_path / side) / runs.TEST_PREDICTIONS) for side in "ab"]
    assert [r["p_fluid"] for r in tested[0]] == [r["p_fluid"] for r in tested[1]]
    assert [r["label"] for r in tested[0]] != [r["label"] for r in tested[1]]
    for rows, scored in zip(tested, (result, permuted)):
        correct = [(float(r["p_fluid"]) > 0.5) == (r["label"] == "1") for r in rows]
        assert sum(correct) / len(correct) == pytest.approx(scored["test_accuracy"])


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_fewer_than_three_folds_have_no_test_fold_and_say_so(records_dir, tmp_path):
    said = []
    result = session.train(tiny(records_dir, tmp_path, folds=2, max_epochs=1), 0, say=said.append, progress=False)
    assert said.count("train: --test_fold=auto: 2 folds leave none to hold out; the checkpoint is chosen and "
                      "scored on the validation fold (at least 3 folds give a test fold)") == 1
    assert result["test_fold"] == "none" and result["test_size"] == 0 and "test_accuracy" not in result
    assert not (tmp_path / "baseline/tiny/batch8/fold0" / runs.TEST_PREDICTIONS).exists()


def test_test_fold_none_is_the_papers_run(records_dir, tmp_path):
    config = tiny(records_dir, tmp_path, test_fold="none", group_by_volume=False, max_epochs=1)
    result = session.train(config, 2, **QUIET)
    meta = records.read_metadata(records_dir)
    train_idx, val_idx = folds.split(meta.labels, "baseline", 2, 5, 0, None)
    assert (result["train_size"], result["val_size"], result["test_size"]) == (len(train_idx), len(val_idx), 0)
    assert not any(key.startswith("test_") and key not in ("test_fold", "test_size", "test_folds") for key in result)
    folder = tmp_path / "baseline/tiny/batch8/fold2"
    with open(folder / runs.PREDICTIONS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["volume_id"], int(r["slice"])) for r in rows] == [
        (meta.volume_ids[i], int(meta.slices[i])) for i in val_idx]
    assert not (folder / runs.TEST_PREDICTIONS).exists()


def test_an_old_result_without_the_new_keys_is_done(records_dir, tmp_path):
    paper = tiny(records_dir, tmp_path, test_fold="none", group_by_volume=False, max_epochs=1)
    session.train(paper, 0, **QUIET)
    path = tmp_path / "baseline/tiny/batch8/fold0" / runs.RESULT
    old = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("test_fold", "test_size", "train_folds", "val_folds", "test_folds")}
    path.write_text(json.dumps(old))
    assert session.train(paper, 0, **QUIET)["skipped"]  # read as test_fold none: done
    said = []
    session.Session(dataclasses.replace(paper, test_fold="auto", group_by_volume=True), say=said.append,
                    redo_stale=False).run("baseline", 0)
    assert said == [f"train: {path.parent}: stale (group_by_volume false (plan: true), test_fold none (plan: auto)); "
                    "left as it is (--overwrite redoes it)"]


def _results(test: bool):
    """Two networks x 5 folds of made-up results, with or without test figures."""
    rng = np.random.default_rng(3)
    out = []
    for arch, shift in (("alexnet", 0.0), ("vgg16", 0.05)):
        for fold in range(5):
            r = {"design": "baseline", "arch": arch, "batch": 8, "fold": fold, "status": "ok", "folds": 5,
                 "seed": 0, "group_by_volume": True, "data": {"manifest_sha256": "x", "num_examples": 100},
                 "best_accuracy": 0.9 + shift + rng.uniform(0, 0.05), "best_auc": 0.95 + rng.uniform(0, 0.04),
                 "iterations_to_best": 10, "train_size": 60, "val_size": 20, "params": 1}
            if test:
                r.update(test_accuracy=0.8 + shift + rng.uniform(0, 0.05), test_auc=0.85 + rng.uniform(0, 0.1),
                         test_size=20, test_fold="auto")
            out.append(r)
    return out


def test_the_report_judges_on_the_test_folds_when_every_run_has_them():
    results = _results(test=True)
    rows, _ = tables.aggregate(results)
    for row in rows:
        mine = [r for r in results if r["arch"] == row.arch]
        acc = [r["test_accuracy"] for r in mine]
        # Nadeau-Bengio with n_test/n_train = 20/60, written out.
        half = scipy_stats.t.ppf(0.975, 4) * np.std(acc, ddof=1) * math.sqrt(1 / 5 + 20 / 60)
        assert row.estimate == "test" and row.test_accuracy_mean == pytest.approx(np.mean(acc), abs=1e-12)
        assert (row.accuracy_ci_low, row.accuracy_ci_high) == pytest.approx(
            (max(0, np.mean(acc) - half), min(1, np.mean(acc) + half)), abs=1e-12)
        assert row.accuracy_mean == pytest.approx(np.mean([r["best_accuracy"] for r in mine]), abs=1e-12)
    assert "Test accuracy" in tables.columns(rows, top=True) and "Validation accuracy" in tables.columns(rows, True)
    [comparison] = comparisons.comparisons(results)
    assert comparison.accuracy.on == "test"
    by_arch = {a: [r["test_accuracy"] for r in sorted(results, key=lambda r: r["fold"]) if r["arch"] == a]
               for a in ("alexnet", "vgg16")}
    expected = np.array([by_arch[a] for a in comparison.accuracy.archs]).T
    np.testing.assert_array_equal(comparison.accuracy.scores, expected)
    # One run without test figures: everything falls back to the paper's validation figures.
    mixed = _results(test=True)
    del mixed[0]["test_accuracy"]
    assert {r.estimate for r in tables.aggregate(mixed)[0]} == {"validation", "test"}
    assert comparisons.comparisons(mixed)[0].accuracy.on == "validation"
