"""End-to-end tests of `python -m octtl.train` on a few small synthetic volumes."""

import csv
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
from absl.testing import flagsaver
from sklearn import metrics

from conftest import REPO, SQUEEZENET_H5
from octtl import records, synthetic, train, training

RESULT_KEYS = {"arch", "batch", "design", "fold", "folds", "seed", "weights", "weights_file", "weights_scaling",
               "image_size", "preprocess", "crop", "train_size", "val_size", "majority_rate", "best_accuracy",
               "best_auc", "iterations_to_best", "iterations", "epochs", "early_stopped", "checks", "wall_seconds",
               "train_images_per_second", "status"}


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """12 synthetic volumes of 10 B-scans, 96 x 96: 120 examples."""
    root = tmp_path_factory.mktemp("train-data")
    synthetic.write_dataset(root / "volumes", volumes=12, bscans=10, height=96, width=96, seed=3)
    records.convert(root / "volumes", root / "records", progress=None)
    return root / "records"


def run_train(*args):
    """octtl.train's main in-process (TensorFlow loads once for the whole module)."""
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["train", *args])
        train.main(["train"])


def small_args(records_dir, logdir, *extra):
    return [f"--data_dir={records_dir}", f"--logdir={logdir}", "--arch=squeezenet", "--batch=8",
            "--image_size=64", "--folds=5", "--max_epochs=2", "--weights=none", *extra]


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
    logdir = tmp_path_factory.mktemp("runs")
    run_train(*small_args(records_dir, logdir, f"--weights={SQUEEZENET_H5}", "--eval_every=5"))
    return logdir / "baseline" / "squeezenet" / "batch8" / "fold0"


def test_outputs_are_complete_and_consistent(finished_run):
    result = json.loads((finished_run / "result.json").read_text())
    assert RESULT_KEYS <= set(result)
    assert result["status"] == "ok"
    assert (result["train_size"], result["val_size"]) == (96, 24)
    assert result["steps_per_epoch"] == 12 and result["iterations"] == 24 and result["epochs"] == 2
    # Checks at steps 6 and 12 of each epoch, plus --eval_every=5 evaluations in between.
    assert [(c["iteration"], c["check"]) for c in result["checks"]] == [
        (5, False), (6, True), (10, False), (12, True), (15, False), (18, True), (20, False), (24, True)]
    best = max(result["checks"], key=lambda c: (c["val_accuracy"], -c["iteration"]))
    assert result["iterations_to_best"] == best["iteration"]
    assert result["best_accuracy"] == best["val_accuracy"]

    with open(finished_run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["volume_id", "slice", "label", "p_fluid", "source"]
    assert [r["source"] for r in rows] == [f"{r['volume_id']}:{r['slice']}" for r in rows]
    assert len(rows) == result["val_size"]
    labels = np.array([int(r["label"]) for r in rows])
    p = np.array([float(r["p_fluid"]) for r in rows])
    assert result["best_accuracy"] == np.mean((p > 0.5) == labels)
    assert result["best_auc"] == metrics.roc_auc_score(labels, p)

    # The saved model is the best one: it reproduces the predictions.
    model = keras.saving.load_model(finished_run / "best.keras")
    meta_rows = [(r["volume_id"], int(r["slice"])) for r in rows]
    assert len(set(meta_rows)) == len(rows)
    assert model.output_shape == (None, 2)
    # The packaged file under its registry name: a known ImageNet file, so auto resolved to its caffe scaling.
    assert (result["weights_scaling"], result["preprocess"]) == ("caffe", "backbone")
    assert result["majority_rate"] == max(labels.mean(), 1 - labels.mean())


def test_flags_txt_holds_octtls_flags_with_the_values_used(finished_run):
    lines = (finished_run / "flags.txt").read_text().splitlines()
    names = [line[2:].split("=", 1)[0] for line in lines]
    train_flags = {f.name for f in flags.FLAGS.get_flags_for_module(train)}
    assert set(names) <= train_flags and len(names) == len(set(names))
    assert {"--arch=squeezenet", "--fold=0", "--preprocess=backbone", "--image_size=64", "--batch=8",
            "--lr=0.0001"} <= set(lines)


def test_best_model_reproduces_predictions(finished_run, records_dir):
    from octtl import data

    result = json.loads((finished_run / "result.json").read_text())
    meta = data.read_metadata(records_dir)
    index = {(v, s): i for i, (v, s) in enumerate(zip(meta.volume_ids, meta.slices))}
    with open(finished_run / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    indices = [index[(r["volume_id"], int(r["slice"]))] for r in rows]
    assert [int(meta.labels[i]) for i in indices] == [int(r["label"]) for r in rows]
    model = keras.saving.load_model(finished_run / "best.keras")
    ds = data.dataset(records_dir, indices, result["image_size"], 32, training=False)
    p = model.predict(ds, verbose=0)[:, 1]
    np.testing.assert_allclose(p, [float(r["p_fluid"]) for r in rows], atol=1e-5)


def test_tensorboard_events(finished_run):
    result = json.loads((finished_run / "result.json").read_text())
    tags = read_events(finished_run)
    assert [step for step, _ in tags["train/loss"]] == list(range(1, result["iterations"] + 1))
    val_auc = [(c["iteration"], c["val_auc"]) for c in result["checks"] if c["val_auc"] is not None]
    assert [(s, pytest.approx(v, abs=1e-6)) for s, v in tags["val/auc"]] == val_auc
    assert tags["best/accuracy"] == [(result["iterations_to_best"], pytest.approx(result["best_accuracy"]))]
    assert tags["val/bscans"][0][1] == "images"
    assert tags["val/pr_curve_at_best/pr_curves"] == [(result["iterations_to_best"], "pr_curves")]
    assert tags["_hparams_/session_start_info"] == [(0, "hparams")]


def test_rerun_is_a_noop_and_overwrite_redoes(finished_run, records_dir, capsys):
    logdir = finished_run.parents[3]
    before = (finished_run / "result.json").read_text()
    mtime = (finished_run / "result.json").stat().st_mtime_ns
    run_train(*small_args(records_dir, logdir, f"--weights={SQUEEZENET_H5}", "--eval_every=5"))
    assert "(already done)" in capsys.readouterr().out
    assert (finished_run / "result.json").stat().st_mtime_ns == mtime
    assert (finished_run / "result.json").read_text() == before


def test_interrupted_run_restarts_cleanly(records_dir, tmp_path):
    run_dir = tmp_path / "baseline" / "squeezenet" / "batch8" / "fold1"
    run_dir.mkdir(parents=True)
    (run_dir / "best.keras").write_text("half-written")
    (run_dir / "events.out.tfevents.0.stale").write_text("stale")
    run_train(*small_args(records_dir, tmp_path, "--fold=1", "--max_epochs=1"))
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("events")) == [
        "best.keras", "flags.txt", "predictions.csv", "result.json"]
    assert not (run_dir / "events.out.tfevents.0.stale").exists()
    keras.saving.load_model(run_dir / "best.keras")


def test_same_seed_same_metrics_and_fixed_iterations(records_dir, tmp_path):
    args = ["--early_stop=false", "--max_iterations=7", "--max_epochs=1", "--seed=4"]
    run_train(*small_args(records_dir, tmp_path / "a", *args))
    run_train(*small_args(records_dir, tmp_path / "b", *args))
    results = [json.loads((tmp_path / r / "baseline/squeezenet/batch8/fold0/result.json").read_text())
               for r in "ab"]
    assert results[0]["iterations"] == 7 and not results[0]["early_stopped"]
    assert results[0]["checks"] == results[1]["checks"]
    assert [c["iteration"] for c in results[0]["checks"]] == [6, 7]


def test_limited_design_and_grouping(records_dir, tmp_path):
    run_train(*small_args(records_dir, tmp_path, "--design=limited", "--group_by_volume", "--max_epochs=1"))
    result = json.loads((tmp_path / "limited/squeezenet/batch8/fold0/result.json").read_text())
    assert result["train_size"] + result["val_size"] == 120
    assert result["train_size"] < result["val_size"]
    with open(tmp_path / "limited/squeezenet/batch8/fold0/predictions.csv", newline="") as f:
        val_volumes = {r["volume_id"] for r in csv.DictReader(f)}
    assert len(val_volumes) == 12 - result["train_size"] // 10  # whole volumes of 10 B-scans


@pytest.mark.parametrize("args, message", [
    (["--batch=200"], "--batch=200: larger than the training set of fold 0 (96 B-scans"),
    (["--data_dir=/nonexistent/records"], "/nonexistent/records: records directory does not exist"),
    (["--weights=/nonexistent/w.h5"], "no such file"),
])
def test_bad_settings_fail_with_one_line(records_dir, tmp_path, args, message):
    with pytest.raises(SystemExit) as exit_info:
        run_train(*small_args(records_dir, tmp_path), *args)
    text = str(exit_info.value.code)
    assert text.startswith("train: error: ") and message in text and "\n" not in text
    assert not list(tmp_path.rglob("result.json"))


def test_unknown_arch_and_divergence_exit_nonzero(records_dir, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    base = [sys.executable, "-m", "octtl.train", *small_args(records_dir, tmp_path)]
    proc = subprocess.run([*base, "--arch=resnet1000"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and "--arch" in proc.stderr and "squeezenet" in proc.stderr
    # A huge step overflows resnet18's weights at once (squeezenet's ReLUs would just die).
    proc = subprocess.run([*base, "--arch=resnet18", "--image_size=32", "--lr=1e38", "--max_epochs=1"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert proc.returncode == 1, proc.stderr[-2000:]
    result = json.loads((tmp_path / "baseline/resnet18/batch8/fold0/result.json").read_text())
    assert result["status"] == "failed" and "loss is nan" in result["error"]
    assert not (tmp_path / "baseline/resnet18/batch8/fold0/best.keras").exists()
    assert "FAILED" in proc.stdout
