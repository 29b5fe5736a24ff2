"""octtl.train and octtl.training.session: the protocol's outputs, sessions, "done", console, and every refusal.

One real run goes through the command line (squeezenet with its packaged ImageNet weights); the rest train the
test-only `tiny` network in-process, where the network is not the point.
"""

import csv
import dataclasses
import glob
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from sklearn import metrics
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import call_main, REPO, synthetic_records
from octtl import runs, train
from octtl.data import folds, pipeline
from octtl.training import early_stop, events, fitting
from octtl.data import converter, records
from octtl.synthetic import render
from octtl.training import session
from octtl.errors import InputError, WeightsError
from octtl.training.config import Config

RESULT_KEYS = {"arch", "batch", "design", "fold", "folds", "seed", "weights", "weights_file", "weights_scaling",
               "image_size", "preprocess", "crop", "train_size", "val_size", "majority_rate", "best_accuracy",
               "best_auc", "iterations_to_best", "iterations", "epochs", "early_stopped", "checks", "wall_seconds",
               "train_images_per_second", "status", "data", *runs.CONFIG_KEYS}
QUIET = dict(say=lambda line: None, progress=False)
PAPER = dict(group_by_volume=False, test_fold="none")  # the paper's ruler, where the protocol's mechanics are the point


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """12 synthetic volumes of 10 B-scans, 96 x 96: 120 examples."""
    return synthetic_records(tmp_path_factory.mktemp("train-data"), volumes=12, bscans=10, height=96, width=96, seed=3)


def small_args(records_dir, logdir, *extra):
    return [f"--data_dir={records_dir}", f"--logdir={logdir}", "--arch=squeezenet", "--batch=8",
            "--image_size=64", "--folds=5", "--max_epochs=2", "--weights=none", *extra]


def tiny(records_dir, logdir, **changes) -> Config:
    values = dict(data_dir=str(records_dir), logdir=str(logdir), arch="tiny", batch=8, folds=5, image_size=32,
                  max_epochs=2, weights="none")
    return Config(**{**values, **changes})


def read_events(run_dir):
    """{tag: [(step, value or plugin name)]} from every event file of a run folder."""
    tags = {}
    for path in glob.glob(str(run_dir / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                if plugin == "scalars" or value.HasField("simple_value"):
                    number = value.simple_value if value.HasField("simple_value") else float(
                        tf.make_ndarray(value.tensor))
                    tags.setdefault(value.tag, []).append((event.step, number))
                else:
                    tags.setdefault(value.tag, []).append((event.step, plugin))
    return tags


@pytest.fixture(scope="module")
def finished_run(records_dir, tmp_path_factory):
    """The command line with squeezenet's packaged ImageNet weights; (run folder, console output)."""
    logdir = tmp_path_factory.mktemp("runs")
    import contextlib
    import io

    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        call_main(train, *small_args(records_dir, logdir, "--weights=imagenet", "--eval_every=5"))
    return logdir / "baseline" / "squeezenet" / "batch8" / "fold0", console.getvalue()


def test_outputs_are_complete_and_consistent(finished_run, records_dir):
    folder, _ = finished_run
    result = json.loads((folder / "result.json").read_text())
    assert RESULT_KEYS <= set(result) and result["status"] == "ok"
    # The defaults: folds grouped by volume, fold 0 held out for test, fold 1 choosing the checkpoint.
    meta = records.read_metadata(records_dir)
    split = folds.splits(meta.labels, "baseline", 0, 5, 0, meta.volume_ids, test=True)
    assert (result["group_by_volume"], result["test_fold"]) == (True, "auto")
    assert (result["train_folds"], result["val_folds"], result["test_folds"]) == ([2, 3, 4], [1], [0])
    assert (result["train_size"], result["val_size"], result["test_size"]) == (
        len(split.train), len(split.validation), len(split.test))
    steps = len(split.train) // 8
    assert result["steps_per_epoch"] == steps and result["iterations"] == 2 * steps and result["epochs"] == 2
    # Two checks per epoch, the last at its end, plus --eval_every=5 evaluations in between.
    checks = {e * steps + c for e in range(2) for c in early_stop.check_steps(steps, 2)}
    evals = set(range(5, 2 * steps + 1, 5)) - checks
    assert [(c["iteration"], c["check"]) for c in result["checks"]] == sorted(
        [(i, True) for i in checks] + [(i, False) for i in evals])
    best = max(result["checks"], key=lambda c: (c["val_accuracy"], -c["iteration"]))
    assert result["iterations_to_best"] == best["iteration"] and result["best_accuracy"] == best["val_accuracy"]

    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["volume_id", "slice", "label", "p_fluid", "source"]
    assert [r["source"] for r in rows] == [f"{r['volume_id']}:{r['slice']}" for r in rows]
    labels = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["p_fluid"]) for r in rows])
    assert len(rows) == result["val_size"] and result["best_accuracy"] == np.mean((p > 0.5) == labels)
    assert result["best_auc"] == metrics.roc_auc_score(labels, p)
    assert result["majority_rate"] == max(labels.mean(), 1 - labels.mean())
    # The packaged file: a known ImageNet file, so auto resolved to its caffe scaling.
    assert (result["weights"], result["weights_scaling"], result["preprocess"]) == ("imagenet", "caffe", "backbone")
    assert result["data"] == records.identity(result["data_dir"])
    # The chosen checkpoint scored once on the test fold: test_predictions.csv holds those numbers.
    with open(folder / "test_predictions.csv", newline="") as f:
        tested = list(csv.DictReader(f))
    keys = {(r["volume_id"], int(r["slice"])) for r in tested}
    assert keys == {(meta.volume_ids[i], int(meta.slices[i])) for i in split.test}
    labels = np.array([int(r["label"]) for r in tested])
    p = np.array([float(r["p_fluid"]) for r in tested])
    assert result["test_accuracy"] == np.mean((p > 0.5) == labels)
    assert result["test_auc"] == metrics.roc_auc_score(labels, p)


def test_console_tells_the_story(finished_run):
    folder, console = finished_run
    lines = console.splitlines()
    result = json.loads((folder / "result.json").read_text())
    assert "train: weights: ImageNet weights" in console and "(packaged with octtl)" in console
    assert "train: input scaling: backbone (caffe" in console
    checks = [line for line in lines if line.startswith(("check at iteration", "eval at iteration"))]
    assert len(checks) == len(result["checks"])
    first = next(c["iteration"] for c in result["checks"] if c["check"])
    check_lines = [line for line in checks if line.startswith("check at")]
    assert check_lines[0].startswith(f"check at iteration {first} (epoch 1): val loss ")
    assert "early stop after" in check_lines[0]
    assert lines[-1] == runs.summary_line({**result, "run_dir": str(folder)})
    assert f"(majority class {result['majority_rate']:.4f})" in lines[-1] and str(folder) in lines[-1]
    assert "\r" not in console and "\x1b" not in console  # no progress bar off a terminal


def test_flags_txt_reruns_the_run_with_octtls_flags_only(finished_run, records_dir, capsys):
    folder, _ = finished_run
    lines = (folder / "flags.txt").read_text().splitlines()
    names = [line[2:].split("=", 1)[0] for line in lines]
    # Only octtl.train's own settings (the fields of the run's Config, each one of its flags), each once.
    own = {field.name for field in dataclasses.fields(Config)}
    assert set(names) <= own and all(name in flags.FLAGS for name in names) and len(set(names)) == len(names)
    assert {"--arch=squeezenet", "--fold=0", "--preprocess=backbone", "--image_size=64", "--batch=8",
            "--lr=0.0001", "--weights=imagenet"} <= set(lines)
    call_main(train, f"--flagfile={folder / 'flags.txt'}")
    assert capsys.readouterr().out.strip().endswith("(already done)")


def test_best_model_reproduces_predictions(finished_run, records_dir):
    folder, _ = finished_run
    result = json.loads((folder / "result.json").read_text())
    meta = records.read_metadata(records_dir)
    index = {(v, s): i for i, (v, s) in enumerate(zip(meta.volume_ids, meta.slices))}
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    indices = [index[(r["volume_id"], int(r["slice"]))] for r in rows]
    assert [int(meta.labels[i]) for i in indices] == [int(r["label"]) for r in rows]
    decoded = pipeline.decode(records_dir, meta, result["image_size"], result["crop"])
    model = keras.saving.load_model(folder / "best.keras")
    p = model.predict(decoded.images[indices], verbose=0)[:, 1]
    np.testing.assert_allclose(p, [float(r["p_fluid"]) for r in rows], atol=1e-5)


def test_tensorboard_events_and_typed_hparams(finished_run):
    folder, _ = finished_run
    result = json.loads((folder / "result.json").read_text())
    tags = read_events(folder)
    assert [step for step, _ in tags["train/loss"]] == list(range(1, result["iterations"] + 1))
    val_auc = [(c["iteration"], c["val_auc"]) for c in result["checks"] if c["val_auc"] is not None]
    assert [(s, pytest.approx(v, abs=1e-6)) for s, v in tags["val/auc"]] == val_auc
    assert tags["best/accuracy"] == [(result["iterations_to_best"], pytest.approx(result["best_accuracy"]))]
    assert tags["val/bscans"][0][1] == "images"
    assert tags["val/pr_curve_at_best/pr_curves"] == [(result["iterations_to_best"], "pr_curves")]
    assert tags["_hparams_/session_start_info"] == [(0, "hparams")]
    config = []
    for path in glob.glob(str(folder.parents[3] / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "_hparams_/experiment":
                    data_pb = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                    config.extend(data_pb.experiment.hparam_infos)
    types = {info.name: info.type for info in config}
    assert set(types) == set(events.HPARAMS) and 0 not in types.values()  # 0 is DATA_TYPE_UNSET


def test_rerun_is_a_noop_and_overwrite_redoes(records_dir, tmp_path, capsys):
    config = tiny(records_dir, tmp_path, max_epochs=1)
    first = session.train(config, 0, **QUIET)
    path = tmp_path / "baseline/tiny/batch8/fold0/result.json"
    mtime = path.stat().st_mtime_ns
    again = session.train(config, 0, **QUIET)
    assert again["skipped"] and path.stat().st_mtime_ns == mtime
    redone = session.train(dataclasses.replace(config, overwrite=True), 0, **QUIET)
    assert "skipped" not in redone and path.stat().st_mtime_ns != mtime
    assert redone["checks"] == first["checks"]  # the same run, trained again: the same numbers


def test_a_finished_run_of_other_settings_is_refused_and_left_untouched(records_dir, tmp_path):
    config = tiny(records_dir, tmp_path, max_epochs=1)
    session.train(config, 0, **QUIET)
    path = tmp_path / "baseline/tiny/batch8/fold0/result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "preprocess": "backbone"}))  # as if trained with another scaling
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    with pytest.raises(InputError) as refused:
        session.train(config, 0, **QUIET)
    assert str(refused.value) == (f"{path.parent}: a finished run of another configuration (preprocess backbone "
                                  "(plan: paper)); --overwrite replaces it, another --logdir keeps both")
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    redone = session.train(dataclasses.replace(config, overwrite=True), 0, **QUIET)
    assert redone["preprocess"] == "paper" and "skipped" not in redone
    # A sweep's session leaves it, saying so, unless told to redo it.
    path.write_text(json.dumps({**redone, "lr": 0.5}))
    said = []
    left = session.Session(config, say=said.append, progress=False, redo_stale=False).run("baseline", 0)
    assert left["stale"] == "lr 0.5 (plan: 0.0001)" and "left as it is" in said[0]
    said.clear()
    again = session.Session(config, say=said.append, progress=False, redo_stale=True).run("baseline", 0)
    assert said[0] == f"train: {path.parent}: stale (lr 0.5 (plan: 0.0001)); training it again"
    assert again["lr"] == 0.0001


def test_a_run_another_process_trains_is_refused(records_dir, tmp_path):
    config = tiny(records_dir, tmp_path, max_epochs=1)
    lock = runs.Run("baseline", "tiny", 8, 0).lock(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, pathlib, sys, time
path = pathlib.Path({str(lock)!r}); path.parent.mkdir(parents=True, exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True); time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(InputError) as refused:
            session.train(config, 0, **QUIET)
        assert str(refused.value) == (f"{tmp_path}/baseline/tiny/batch8/fold0: another octtl process is training "
                                      f"this run (it holds {lock}); wait for it, or use another --logdir")
        assert not (tmp_path / "baseline").exists()
    finally:
        holder.kill()
        holder.wait()
    assert session.train(config, 0, **QUIET)["status"] == "ok"  # the lock dies with its holder


@pytest.mark.parametrize("fault", ["read-only", "full disk", "ctrl-c"])
def test_a_run_stopped_by_a_write_or_ctrl_c_is_one_line_and_leaves_no_partial_checkpoint(records_dir, tmp_path,
                                                                                         monkeypatch, fault):
    config = tiny(records_dir, tmp_path, max_epochs=1)
    folder = tmp_path / "baseline/tiny/batch8/fold0"
    error = {"read-only": PermissionError(13, "Permission denied"), "full disk": OSError(28, "No space left on device"),
             "ctrl-c": KeyboardInterrupt()}[fault]

    def save(model, path, *args, **kwargs):  # as keras would fail, after writing part of the file
        pathlib.Path(path).write_bytes(b"half a checkpoint")
        raise error

    monkeypatch.setattr(keras.Model, "save", save)
    if fault == "ctrl-c":
        with pytest.raises(KeyboardInterrupt):
            session.train(config, 0, **QUIET)
    else:
        with pytest.raises(InputError) as stopped:
            session.train(config, 0, **QUIET)
        assert str(stopped.value) == (f"--logdir={tmp_path}: cannot write {folder} ({error.strerror}); the run did "
                                      "not finish and starts again when the command is run again")
    assert not (folder / runs.RESULT).exists()
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".keras")]  # no half-written checkpoint
    monkeypatch.undo()
    assert session.train(config, 0, **QUIET)["status"] == "ok"  # the next command trains it from the start


def test_ctrl_c_in_octtl_train_is_one_line(records_dir, tmp_path):
    script = f"""
import sys
from octtl import console, train
console.start_backend()  # quietly, as octtl.train starts it
import keras
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
keras.Model.fit = interrupted
sys.argv = ["train", "--data_dir={records_dir}", "--logdir={tmp_path}", "--arch=squeezenet", "--batch=8",
            "--image_size=32", "--weights=none", "--max_epochs=1"]
train.run()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "train: interrupted; the finished runs are kept, and the run that was training (it has no result.json) "
        "starts again from its beginning when the same command is run again"]
    assert not (tmp_path / "baseline/squeezenet/batch8/fold0/result.json").exists()


def test_session_runs_equal_fresh_processes(records_dir, tmp_path):
    """Two runs of one session (a fold of one design, then one of the other, so the second starts from the reset)
    against `python -m octtl.train`."""
    config = Config(data_dir=str(records_dir), logdir=str(tmp_path / "session"), arch="squeezenet",
                             batch=8, folds=5, image_size=48, max_epochs=1, weights="none")
    one = session.Session(config, **QUIET)
    plan = [("baseline", 3), ("limited", 1)]
    mine = [one.run(design, fold) for design, fold in plan]
    env = dict(os.environ, OCTTL_VERBOSE="0")
    fresh_logdir = tmp_path / "fresh"
    # One process per run, started together: they are independent, and their start-up overlaps.
    procs = [subprocess.Popen(
        [sys.executable, "-m", "octtl.train", f"--data_dir={records_dir}", f"--logdir={fresh_logdir}",
         "--arch=squeezenet", "--batch=8", "--folds=5", "--image_size=48", "--max_epochs=1", "--weights=none",
         f"--design={design}", f"--fold={fold}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO, env=env) for design, fold in plan]
    for proc in procs:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
    for (design, fold), result in zip(plan, mine):
        fresh = json.loads((fresh_logdir / design / "squeezenet/batch8" / f"fold{fold}" / "result.json").read_text())
        for key in ("best_accuracy", "best_auc", "iterations_to_best", "iterations"):
            assert fresh[key] == pytest.approx(result[key], abs=1e-9), (design, fold, key)
        for mine_check, fresh_check in zip(result["checks"], fresh["checks"], strict=True):
            assert fresh_check == pytest.approx(mine_check, abs=1e-9), (design, fold)
        for name in ("predictions.csv", "flags.txt"):
            ours = (tmp_path / "session" / design / "squeezenet/batch8" / f"fold{fold}" / name).read_bytes()
            theirs = (fresh_logdir / design / "squeezenet/batch8" / f"fold{fold}" / name).read_bytes()
            assert ours == theirs.replace(str(fresh_logdir).encode(), str(tmp_path / "session").encode()), name


def test_interrupted_run_restarts_cleanly(records_dir, tmp_path):
    run_dir = tmp_path / "baseline" / "tiny" / "batch8" / "fold1"
    run_dir.mkdir(parents=True)
    (run_dir / "best.keras").write_text("half-written")
    (run_dir / "events.out.tfevents.0.stale").write_text("stale")
    session.train(tiny(records_dir, tmp_path, max_epochs=1), 1, **QUIET)
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events")) == [
        "best.keras", "flags.txt", "predictions.csv", "result.json", "test_predictions.csv"]
    assert not (run_dir / "events.out.tfevents.0.stale").exists()
    keras.saving.load_model(run_dir / "best.keras")


def test_fixed_iterations_and_no_model_saved(records_dir, tmp_path):
    config = tiny(records_dir, tmp_path, early_stop=False, max_iterations=7, max_epochs=1, seed=4,
                  save_model=False, **PAPER)
    result = session.train(config, 0, **QUIET)
    assert result["iterations"] == 7 and not result["early_stopped"]
    assert [c["iteration"] for c in result["checks"]] == [6, 7]
    assert not (tmp_path / "baseline/tiny/batch8/fold0/best.keras").exists()


def test_limited_design_trains_on_one_fold_and_keeps_volumes_whole(records_dir, tmp_path):
    result = session.train(tiny(records_dir, tmp_path, design="limited", max_epochs=1), 0, **QUIET)
    assert (result["train_folds"], result["val_folds"], result["test_folds"]) == ([0], [1], [2, 3, 4])
    assert result["train_size"] + result["val_size"] + result["test_size"] == 120
    folder = tmp_path / "limited/tiny/batch8/fold0"
    sides = []
    for name in ("predictions.csv", "test_predictions.csv"):
        with open(folder / name, newline="") as f:
            sides.append({r["volume_id"] for r in csv.DictReader(f)})
    assert not sides[0] & sides[1]  # no volume both validates and tests
    # Whole volumes of 10 B-scans: 12 volumes in all, the training fold's among them.
    assert len(sides[0]) + len(sides[1]) == 12 - result["train_size"] // 10


def test_divergence_is_a_failed_run(tmp_path):
    class Model:
        stop_training = False

    logger = fitting.StepLogger(events.Writer(tmp_path), iteration=iter(range(100)).__next__)
    logger.set_model(Model())
    for loss in (0.7, 9.0, 650.0):
        logger.on_train_batch_end(0, {"loss": loss})
    assert logger.diverged is None
    logger.on_train_batch_end(0, {"loss": 701.0})  # over 1000 times the first 0.7
    assert logger.diverged[:2] == (4, 701.0) and logger.model.stop_training


def test_nan_loss_fails_the_run_and_exits_1(records_dir, tmp_path):
    result = session.train(tiny(records_dir, tmp_path, lr=1e30, max_epochs=1), 0, **QUIET)
    assert result["status"] == "failed" and "training loss is" in result["error"]
    assert not (tmp_path / "baseline/tiny/batch8/fold0/best.keras").exists()


@pytest.mark.parametrize("args, message", [
    (["--batch=200"], "--batch=200: larger than the training set of fold 0 ("),
    (["--data_dir=/nonexistent/records"], "/nonexistent/records: records directory does not exist"),
    (["--weights=/nonexistent/w.h5"], "--weights=/nonexistent/w.h5: no such file"),
    (["--image_size=16"], "--image_size=16: squeezenet needs at least 32 px"),
    (["--fold=5"], "--fold=5: must be in 0..4 or -1"),
    (["--data_dir="], "--data_dir required"),
])
def test_bad_settings_fail_with_one_line_and_write_nothing(records_dir, tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        call_main(train, *small_args(records_dir, tmp_path), *args)
    text = str(exit_info.value.code)
    assert text.startswith("train: error: ") and message in text and "\n" not in text
    assert not any(tmp_path.iterdir())


def test_a_logdir_that_cannot_be_created_is_one_line(records_dir, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        call_main(train, *small_args(records_dir, tmp_path / "file" / "runs"))
    assert str(exit_info.value.code).startswith(f"train: error: --logdir={tmp_path / 'file' / 'runs'}: cannot be "
                                                "created")
    assert (tmp_path / "file").read_text() == "not a folder"


def test_garbage_weights_fail_before_the_run_folder(records_dir, tmp_path):
    garbage = tmp_path / "w.h5"
    garbage.write_bytes(b"not hdf5")
    with pytest.raises(WeightsError, match=f"--weights={garbage}: .* neither an HDF5 weights file"):
        session.train(Config(data_dir=str(records_dir), logdir=str(tmp_path / "runs"), arch="squeezenet",
                                       batch=8, folds=5, image_size=32, weights=str(garbage)), 0, **QUIET)
    assert not (tmp_path / "runs").exists()


def test_one_class_data_is_refused(tmp_path):
    render.write_dataset(tmp_path / "dry", volumes=3, bscans=4, height=32, width=32, seed=1, fluid_fraction=0.0)
    converter.convert(tmp_path / "dry", tmp_path / "records", progress=None)
    with pytest.raises(InputError, match="every B-scan has label 0; a classifier needs both classes"):
        session.train(tiny(tmp_path / "records", tmp_path / "runs", folds=2), 0, **QUIET)
    assert not (tmp_path / "runs").exists()


def test_unknown_arch_on_the_command_line(records_dir, tmp_path):
    with pytest.raises(flags.IllegalFlagValueError, match="resnet1000"):
        call_main(train, *small_args(records_dir, tmp_path), "--arch=resnet1000")
