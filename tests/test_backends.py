"""The study on the JAX backend with TensorFlow uninstalled (issue #26): convert, train, sweep, predict and report.

Every Python process of the test (the commands and the sweep's workers) starts with tests/hide_tensorflow.py's
prelude as its sitecustomize, so TensorFlow is not importable anywhere, and each writes down at exit whether
TensorFlow got into sys.modules. The run folders are then read here, by TensorFlow's own readers where there is
one, against the run-folder contract (octtl.runs).
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import hide_tensorflow
from conftest import REPO
from octtl import runs
from octtl.data import records

pytest.importorskip("jax")

EXIT_CHECK = """
import atexit, os
def _tensorflow_stayed_out():
    if "tensorflow" in sys.modules:
        with open(os.path.join(os.environ["OCTTL_TEST_MARKS"], f"tensorflow-{os.getpid()}"), "w") as f:
            f.write(" ".join(sys.argv))
atexit.register(_tensorflow_stayed_out)
"""
TRAINING = ["--arch=squeezenet", "--batch=4", "--image_size=48", "--max_epochs=2", "--folds=3"]


@pytest.fixture(scope="module")
def without_tensorflow(tmp_path_factory):
    """An environment whose Python processes run on JAX and cannot import TensorFlow, and its folder of marks."""
    root = tmp_path_factory.mktemp("jax-no-tf")
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(hide_tensorflow.PRELUDE + EXIT_CHECK)
    marks = root / "marks"
    marks.mkdir()
    env = dict(os.environ, KERAS_BACKEND="jax", OCTTL_TEST_MARKS=str(marks), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(site), str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    return env, root


def command(env, module, *args, ok=True):
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    if ok:
        assert done.returncode == 0, f"{module}: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def study(without_tensorflow):
    """Synthetic volumes converted, one run trained, a two-fold sweep, predictions and the report: all on JAX."""
    from octtl.synthetic import render

    env, root = without_tensorflow
    render.write_dataset(root / "volumes", volumes=6, bscans=6, height=48, width=48, seed=5)
    command(env, "octtl.to_tfrecord", f"--input_dir={root / 'volumes'}", f"--output_dir={root / 'records'}")
    trained = command(env, "octtl.train", f"--data_dir={root / 'records'}", f"--logdir={root / 'runs'}", "--fold=0",
                      *TRAINING)
    command(env, "octtl.sweep", f"--data_dir={root / 'records'}", f"--logdir={root / 'sweep'}", "--archs=squeezenet",
            "--batches=4", "--designs=baseline", "--workers=1",
            *[a for a in TRAINING if not a.startswith(("--arch=", "--batch="))])
    run = root / "runs" / "baseline" / "squeezenet" / "batch4" / "fold0"
    command(env, "octtl.predict", f"--model={run / runs.BEST_MODEL}", f"--input={root / 'records'}",
            f"--output={root / 'predicted.csv'}")
    command(env, "octtl.report", f"--logdir={root / 'sweep'}", f"--out_dir={root / 'report'}")
    return root, run, trained.stdout


def test_no_process_imported_tensorflow(study, without_tensorflow):
    _, root = without_tensorflow
    assert sorted(p.read_text() for p in (root / "marks").iterdir()) == []


def test_the_run_folder_holds_the_contract_and_records_jax(study):
    root, run, stdout = study
    result = json.loads((run / runs.RESULT).read_text())
    assert result["status"] == "ok" and result["backend"] == "jax" and result["arch"] == "squeezenet"
    assert "train: jax backend" in stdout
    meta = records.read_metadata(root / "records")
    with open(run / runs.PREDICTIONS, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == result["val_size"] > 0
    # The probabilities agree with the metrics result.json reports: accuracy recomputed from predictions.csv.
    by_key = {(v, int(s)): int(label) for v, s, label in zip(meta.volume_ids, meta.slices, meta.labels)}
    labels = np.array([by_key[(r["volume_id"], int(r["slice"]))] for r in rows])
    assert [int(r["label"]) for r in rows] == list(labels)
    predicted = np.array([float(r["p_fluid"]) > 0.5 for r in rows])
    assert np.mean(predicted == labels) == pytest.approx(result["best_accuracy"])
    assert (run / runs.FLAGS_FILE).is_file() and (run / runs.BEST_MODEL).is_file()
    assert (run / runs.TEST_PREDICTIONS).is_file()


def test_tensorboard_reads_the_jax_runs_events(study):
    from tensorboard.backend.event_processing import event_accumulator

    _, run, _ = study
    result = json.loads((run / runs.RESULT).read_text())
    acc = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"train/loss", "val/loss", "val/accuracy", "best/accuracy", "val/pr_curve_at_best/pr_curves"} <= tags
    assert [e.step for e in acc.Tensors("val/loss")] == [c["iteration"] for c in result["checks"]]


def test_the_sweep_and_report_ran_on_jax(study):
    root, _, _ = study
    results = [json.loads(p.read_text()) for p in sorted((root / "sweep").glob("baseline/squeezenet/batch4/fold*/result.json"))]
    assert [r["fold"] for r in results] == [0, 1, 2] and {r["backend"] for r in results} == {"jax"}
    assert (root / "report" / "index.html").is_file()


def test_predict_gives_the_runs_validation_probabilities(study):
    root, run, _ = study
    with open(run / runs.PREDICTIONS, newline="") as f:
        validation = {(r["volume_id"], r["slice"]): float(r["p_fluid"]) for r in csv.DictReader(f)}
    with open(root / "predicted.csv", newline="") as f:
        predicted = {(r["volume_id"], r["slice"]): float(r["p_fluid"]) for r in csv.DictReader(f)}
    assert set(validation) <= set(predicted)
    assert max(abs(predicted[k] - p) for k, p in validation.items()) < 1e-5


def test_what_needs_tensorflow_says_so_in_one_line(study, without_tensorflow):
    env, root = without_tensorflow
    _, run, _ = study
    exported = command(env, "octtl.export", f"--model={run / runs.BEST_MODEL}", f"--output={root / 'saved'}",
                       ok=False)
    assert exported.returncode == 1 and not (root / "saved").exists()
    assert exported.stderr.strip().splitlines() == [
        "export: error: export (a TensorFlow SavedModel) needs TensorFlow, which is not installed (pip install "
        "tensorflow); training, the sweep, predict and the report run without it on KERAS_BACKEND=jax or torch"]
    gradcam = command(env, "octtl.predict", f"--model={run / runs.BEST_MODEL}", f"--input={root / 'records'}",
                      f"--output={root / 'g.csv'}", f"--gradcam_dir={root / 'cams'}", ok=False)
    assert gradcam.returncode == 1 and len(gradcam.stderr.strip().splitlines()) == 1
    assert "--gradcam_dir: Grad-CAM takes its gradients with TensorFlow's GradientTape" in gradcam.stderr
    mirrored = command(env, "octtl.train", f"--data_dir={root / 'records'}", f"--logdir={root / 'mirrored'}",
                       "--strategy=mirrored", *TRAINING, ok=False)
    assert mirrored.returncode == 1 and "--strategy=mirrored: TensorFlow's MirroredStrategy" in mirrored.stderr
    assert not (root / "mirrored").exists()


def test_tensorflow_as_the_backend_without_it_is_one_line(without_tensorflow, tmp_path):
    env, _ = without_tensorflow
    done = command(dict(env, KERAS_BACKEND="tensorflow"), "octtl.train", f"--data_dir={tmp_path}",
                   f"--logdir={tmp_path / 'runs'}", *TRAINING, ok=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "train: error: KERAS_BACKEND=tensorflow: tensorflow is not installed; install it, or choose another backend "
        "(KERAS_BACKEND=jax or KERAS_BACKEND=torch)"]


def test_tensorflow_stays_out_of_a_jax_process_where_it_is_installed():
    # Keras' set_random_seed imports TensorFlow wherever it can (seconds, and its start-up lines on the console).
    code = ("import sys; from octtl import console; assert console.start_backend() == 'jax'; import keras; "
            "keras.utils.set_random_seed(0); print('tensorflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="jax"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "False\n" and done.stderr == "", done.stderr[-2000:]
