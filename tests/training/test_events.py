"""octtl.training.events: TensorBoard event files without TensorFlow, read back as TensorBoard reads them and
compared with what TensorFlow's own writer (tf.summary and the plugins' TensorFlow APIs) writes for the same run."""

import io
import math
import subprocess
import sys
import types

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

import hide_tensorflow
from conftest import REPO
from octtl.training import events

HPARAMS = dict(arch="squeezenet", batch=16, design="baseline", fold=3, weights="/some/file.weights.h5",
               image_size=96, lr=1e-4, momentum=0.9, preprocess="paper", crop="center", seed=-7,
               group_by_volume=True, epochs=10)  # a key beyond HPARAMS is ignored, as by the TF writer
TRIAL = "baseline/squeezenet/batch16/fold3"
CHECKS = [types.SimpleNamespace(iteration=4, val_loss=0.61, val_accuracy=0.7, val_auc=0.8),
          types.SimpleNamespace(iteration=8, val_loss=0.52, val_accuracy=0.75, val_auc=math.nan)]
LABELS = np.array([0, 1, 0, 1, 1, 0, 1, 0])
BEST = types.SimpleNamespace(iteration=4, val_loss=0.61, val_accuracy=0.7, val_auc=0.8,
                             p_fluid=np.array([0.1, 0.9, 0.35, 0.6, 0.5, 0.0, 1.0, 0.7]))
STEP_LOGS = [{"loss": 0.7, "accuracy": 0.5}, {"loss": 0.65, "accuracy": 0.6}, {"loss": 0.6}]
BSCANS = np.random.default_rng(0).integers(0, 256, (6, 12, 10, 1), np.uint8)


def _write_run(logdir):
    """A small run with octtl.training.events: config at the top, one run folder below."""
    events.write_hparams_config(logdir)
    with events.Writer(logdir / "run") as writer:
        events.log_start(writer, HPARAMS, TRIAL, BSCANS)
        done = iter(range(len(STEP_LOGS)))
        log = events.StepLog(writer, lambda: next(done))
        for logs in STEP_LOGS:
            assert log.update(logs) is False
        for check in CHECKS:
            events.log_check(writer, check)
        events.log_end(writer, BEST, LABELS)


def _write_run_with_tensorflow(logdir):
    """The same run with tf.summary, as octtl wrote it before events.py: the reference TensorBoard reads."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp
    from tensorboard.plugins.pr_curve import summary as pr_summary

    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name, domain) for name, domain in events.HPARAMS.items()],
                          metrics=[hp.Metric(m) for m in events.BEST_METRICS])
    writer = tf.summary.create_file_writer(str(logdir / "run"))
    values = {name: HPARAMS[name] for name in events.HPARAMS}
    values["weights"] = "file"
    with writer.as_default(step=0):
        hp.hparams({hp.HParam(name, domain): values[name] for name, domain in events.HPARAMS.items()},
                   trial_id=TRIAL)
        tf.summary.image("val/bscans", np.asarray(BSCANS[:4], np.float32) / 255.0, max_outputs=4)
    for step, logs in enumerate(STEP_LOGS, 1):
        with writer.as_default(step=step):
            tf.summary.scalar("train/loss", logs["loss"])
            if "accuracy" in logs:
                tf.summary.scalar("train/accuracy", logs["accuracy"])
    for check in CHECKS:
        with writer.as_default(step=check.iteration):
            tf.summary.scalar("val/loss", check.val_loss)
            tf.summary.scalar("val/accuracy", check.val_accuracy)
            if np.isfinite(check.val_auc):
                tf.summary.scalar("val/auc", check.val_auc)
    with writer.as_default(step=BEST.iteration):
        tf.summary.scalar("best/accuracy", BEST.val_accuracy)
        tf.summary.scalar("best/auc", BEST.val_auc)
        tf.summary.scalar("best/iterations_to_best", BEST.iteration)
        pb = pr_summary.pb("val/pr_curve_at_best", labels=LABELS.astype(bool),
                           predictions=BEST.p_fluid.astype(np.float32), num_thresholds=201)
        tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=BEST.iteration)
    writer.close()


def _read(folder) -> dict:
    """Every tensor summary of a folder: tag -> (plugin name, plugin content, [(step, value)])."""
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        meta = acc.SummaryMetadata(tag)
        values = [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        out[tag] = (meta.plugin_data.plugin_name, meta.plugin_data.content, values)
    return out


def _without_times(content: bytes) -> plugin_data_pb2.HParamsPluginData:
    """The hparams plugin's data without the wall-clock times each writer stamps."""
    data = plugin_data_pb2.HParamsPluginData.FromString(content)
    if data.WhichOneof("data") == "experiment":
        data.experiment.time_created_secs = 0
    elif data.WhichOneof("data") == "session_start_info":
        data.session_start_info.start_time_secs = 0
    return data


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


def test_every_tag_and_value_is_where_tensorboard_looks(tmp_path):
    _write_run(tmp_path)
    top, run = _read(tmp_path), _read(tmp_path / "run")
    assert set(top) == {"_hparams_/experiment"}
    experiment = _without_times(top["_hparams_/experiment"][1]).experiment
    assert [h.name for h in experiment.hparam_infos] == list(events.HPARAMS)
    assert [m.name.tag for m in experiment.metric_infos] == list(events.BEST_METRICS)
    assert set(run) == {"_hparams_/session_start_info", "val/bscans", "train/loss", "train/accuracy", "val/loss",
                        "val/accuracy", "val/auc", "best/accuracy", "best/auc", "best/iterations_to_best",
                        "val/pr_curve_at_best/pr_curves"}
    start = _without_times(run["_hparams_/session_start_info"][1]).session_start_info
    assert start.group_name == TRIAL and start.hparams["weights"].string_value == "file"
    assert start.hparams["seed"].number_value == -7 and start.hparams["group_by_volume"].bool_value
    scalars = {tag: [(step, float(v)) for step, v in values] for tag, (plugin, _, values) in run.items()
               if plugin == "scalars"}
    assert scalars["train/loss"] == [(1, pytest.approx(0.7)), (2, pytest.approx(0.65)), (3, pytest.approx(0.6))]
    assert scalars["train/accuracy"] == [(1, 0.5), (2, pytest.approx(0.6))]
    assert scalars["val/loss"] == [(4, pytest.approx(0.61)), (8, pytest.approx(0.52))]
    assert scalars["val/auc"] == [(4, pytest.approx(0.8))]  # no AUC where it is undefined
    assert scalars["best/iterations_to_best"] == [(4, 4.0)]
    (step, strings), = run["val/bscans"][2]
    assert step == 0 and list(strings[:2]) == [b"10", b"12"] and len(strings) == 6
    for png, bscan in zip(strings[2:], BSCANS):
        np.testing.assert_array_equal(_pixels(png), bscan[..., 0])
    (step, curve), = run["val/pr_curve_at_best/pr_curves"][2]
    assert step == 4 and curve.shape == (6, 201) and curve.dtype == np.float32
    # tp, fp, tn, fn: everything is fluid at threshold 0; at 0.65 (0.9 and 1.0 of fluid, 0.7 of normal)
    assert list(curve[:4, 0]) == [4, 4, 0, 0] and list(curve[:4, 130]) == [2, 1, 3, 2]


def test_a_run_writes_what_the_tensorflow_writer_writes(tmp_path):
    pytest.importorskip("tensorflow")
    _write_run(tmp_path / "ours")
    _write_run_with_tensorflow(tmp_path / "tf")
    for folder in ("", "run"):
        ours, theirs = _read(tmp_path / "ours" / folder), _read(tmp_path / "tf" / folder)
        assert sorted(ours) == sorted(theirs)
        for tag, (plugin, content, values) in theirs.items():
            assert ours[tag][0] == plugin, tag
            if plugin == "hparams":
                assert _without_times(ours[tag][1]) == _without_times(content), tag
            else:
                assert ours[tag][1] == content, tag
            assert [step for step, _ in ours[tag][2]] == [step for step, _ in values], tag
            for (_, got), (_, expected) in zip(ours[tag][2], values):
                if plugin == "images":  # PNG bytes differ between encoders; the pixels do not
                    assert list(got[:2]) == list(expected[:2])
                    for a, b in zip(got[2:], expected[2:]):
                        np.testing.assert_array_equal(_pixels(a), _pixels(b))
                elif plugin != "hparams":
                    assert got.dtype == expected.dtype and got.shape == expected.shape, tag
                    np.testing.assert_array_equal(got, expected)


def test_the_pr_curve_is_the_plugins_own():
    pytest.importorskip("tensorflow")
    from tensorboard.plugins.pr_curve import summary as pr_summary

    rng = np.random.default_rng(1)
    labels, predictions = rng.random(300) < 0.4, rng.random(300).astype(np.float32)
    expected = pr_summary.pb("x", labels=labels, predictions=predictions, num_thresholds=201).value[0]
    got = events.pr_curve_pb("x", labels, predictions).value[0]
    assert got.tag == expected.tag
    assert got.metadata.SerializeToString() == expected.metadata.SerializeToString()
    np.testing.assert_array_equal(tensor_util.make_ndarray(got.tensor), tensor_util.make_ndarray(expected.tensor))


@pytest.mark.parametrize("losses, why", [([0.5, math.nan], ""), ([0.5, 600.0], "over 1000 times")])
def test_a_diverging_loss_stops_and_is_not_logged(tmp_path, losses, why):
    with events.Writer(tmp_path) as writer:
        done = iter(range(5))
        log = events.StepLog(writer, lambda: next(done))
        assert log.update({"loss": losses[0]}) is False
        assert log.update({"loss": losses[1]}) is True
        iteration, loss, message = log.diverged
        assert iteration == 2 and (math.isnan(loss) or loss == losses[1]) and why in message
    assert [step for step, _ in _read(tmp_path)["train/loss"][2]] == [1]


def test_a_second_phase_measures_divergence_against_the_runs_first_loss(tmp_path):
    # two_phase's fine-tuning starts from the head's best check, whose loss can be near zero: a rise from there to
    # the run's usual levels is no divergence; a thousand times the run's first loss still is.
    with events.Writer(tmp_path) as writer:
        done = iter(range(10))
        log = events.StepLog(writer, lambda: next(done), first_loss=0.7)
        assert [log.update({"loss": loss}) for loss in (4e-7, 0.21, 0.6)] == [False, False, False]
        assert log.update({"loss": 701.0}) is True and "0.7: diverged" in log.diverged[2]


def test_the_hparams_config_is_written_once_per_logdir(tmp_path):
    events.write_hparams_config(tmp_path)
    events.write_hparams_config(tmp_path)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_events_are_written_and_read_with_tensorflow_not_importable(tmp_path):
    # The process boundary is the point: TensorFlow not importable, the whole run written and read back.
    script = hide_tensorflow.PRELUDE + f"""
import pathlib
sys.path[:0] = [{str(REPO / "tests")!r}, {str(REPO / "tests" / "training")!r}]
import test_events
logdir = pathlib.Path({str(tmp_path)!r})
test_events._write_run(logdir)
assert len(test_events._read(logdir / "run")) == 11
assert "tensorflow" not in sys.modules
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
