"""What a run writes for TensorBoard: per-iteration training loss, validation checks, hparams, B-scans, PR curve.

Tags: `train/loss`, `train/accuracy` per iteration; `val/loss`, `val/accuracy`, `val/auc` per check; `best/*`
at the best check; the hyperparameters with typed domains (hparams plugin); four validation B-scans; the PR
curve of the best check. `write_hparams_config` puts the hparams columns at the top of a log folder once.
"""

import math
import pathlib

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.pr_curve import summary as pr_summary

from octtl import protocol

from octtl.nets import registry

from octtl.data import pipeline

from octtl.nets import scaling

# Typed domains, so TensorBoard's hparams dashboard filters and sorts each column as what it is.
HPARAMS = {
    "arch": hp.Discrete(sorted(registry.ARCHITECTURES)),
    "batch": hp.IntInterval(1, 1 << 16),
    "design": hp.Discrete(list(protocol.DESIGNS)),
    "fold": hp.IntInterval(0, 1 << 16),
    "weights": hp.Discrete(["imagenet", "none", "file"]),
    "image_size": hp.IntInterval(1, 1 << 16),
    "lr": hp.RealInterval(0.0, math.inf),
    "momentum": hp.RealInterval(0.0, 1.0),
    "preprocess": hp.Discrete(list(scaling.PREPROCESS)),
    "crop": hp.Discrete(list(pipeline.CROPS)),
    "seed": hp.IntInterval(-(1 << 31), 1 << 31),
    "group_by_volume": hp.Discrete([False, True]),
}
BEST_METRICS = ("best/accuracy", "best/auc", "best/iterations_to_best", "test/accuracy", "test/auc")
# A training loss this many times the first batch's is divergence, as a NaN is: a finite 5e34 is no result.
DIVERGENCE_FACTOR = 1000.0


def write_hparams_config(logdir):
    """The hparams plugin's experiment definition (columns and metrics) at the top of a logdir, once."""
    logdir = pathlib.Path(logdir)
    if list(logdir.glob("events.out.tfevents.*")):
        return
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name, domain) for name, domain in HPARAMS.items()],
                          metrics=[hp.Metric(m) for m in BEST_METRICS])


class StepLogger(keras.callbacks.Callback):
    """Per-iteration training loss/accuracy to TensorBoard; stops on a non-finite or exploding loss.

    Args:
        writer: The run's summary writer.
        iteration: Returns the number of iterations finished before the current one.
    """

    def __init__(self, writer, iteration):
        super().__init__()
        self._writer = writer
        self._iteration = iteration
        self._first_loss = None
        self.diverged = None

    def on_train_batch_end(self, batch, logs=None):
        """Logs the iteration's loss and accuracy; stops training on a non-finite or exploding loss."""
        logs = logs or {}
        iteration = self._iteration() + 1  # the early-stop callback counts after this one
        loss = float(logs.get("loss", math.nan))
        if self._first_loss is None and math.isfinite(loss):
            self._first_loss = loss
        why = ""
        if math.isfinite(loss) and self._first_loss and loss > DIVERGENCE_FACTOR * self._first_loss:
            why = f", over {DIVERGENCE_FACTOR:g} times the first iteration's {self._first_loss:.4g}: diverged"
        if not math.isfinite(loss) or why:
            self.diverged = (iteration, loss, why)
            self.model.stop_training = True
            return
        with self._writer.as_default(step=iteration):
            tf.summary.scalar("train/loss", loss)
            if "accuracy" in logs:
                tf.summary.scalar("train/accuracy", float(logs["accuracy"]))


def log_start(writer, hparams: dict, trial: str, images: np.ndarray):
    """The run's hyperparameters (weights as imagenet, none or file) and four validation B-scans, at step 0."""
    values = dict(hparams)
    if values["weights"] not in ("imagenet", "none"):
        values["weights"] = "file"
    with writer.as_default(step=0):
        hp.hparams({hp.HParam(name, domain): values[name] for name, domain in HPARAMS.items()}, trial_id=trial)
        tf.summary.image("val/bscans", np.asarray(images[:4], np.float32) / 255.0, max_outputs=4)


def log_check(writer, evaluation):
    """One validation check's loss, accuracy and (where defined) AUC."""
    with writer.as_default(step=evaluation.iteration):
        tf.summary.scalar("val/loss", evaluation.val_loss)
        tf.summary.scalar("val/accuracy", evaluation.val_accuracy)
        if np.isfinite(evaluation.val_auc):
            tf.summary.scalar("val/auc", evaluation.val_auc)


def log_end(writer, best, val_labels, tested=None):
    """The best check's metrics and its PR curve, at the best iteration; its test-fold scores, if any."""
    with writer.as_default(step=best.iteration):
        tf.summary.scalar("best/accuracy", best.val_accuracy)
        if np.isfinite(best.val_auc):
            tf.summary.scalar("best/auc", best.val_auc)
        tf.summary.scalar("best/iterations_to_best", best.iteration)
        if tested is not None:
            tf.summary.scalar("test/accuracy", tested.val_accuracy)
            if np.isfinite(tested.val_auc):
                tf.summary.scalar("test/auc", tested.val_auc)
        if best.p_fluid is not None:  # a PR curve is a two-class network's
            pb = pr_summary.pb("val/pr_curve_at_best", labels=np.asarray(val_labels, bool),
                               predictions=np.asarray(best.p_fluid, np.float32), num_thresholds=201)
            tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=best.iteration)
    writer.flush()
