"""What a run writes for TensorBoard, on every Keras backend and without TensorFlow.

Tags: `train/loss`, `train/accuracy` per iteration (`StepLog`); `val/loss`, `val/accuracy`, `val/auc` per
check; `best/*` and `test/*` at the best check; the hparams plugin's experiment (`write_hparams_config`, at the top
of a log folder once) and each run's hyperparameters with typed domains, so the dashboard filters and sorts each
column as what it is; four validation B-scans (`val/bscans`); the PR curve of the best check of a two-class network
(`val/pr_curve_at_best/pr_curves`, the pr_curves plugin's 6 x 201 float32 tensor). Each summary is the one
tf.summary writes, built from tensorboard's own protos and plugin metadata helpers (tensorboard.plugins.*.metadata,
hparams.summary_v2's *_pb functions), so TensorBoard reads them alike; B-scans are PNG-encoded by Pillow (other
bytes than TensorFlow's encoder, the same pixels).

The file is written with octtl.data.tfrecord rather than tensorboard's EventFileWriter: that writer reaches
TensorFlow's gfile through tensorboard.compat whenever TensorFlow is installed, so it would start TensorFlow
under the JAX or PyTorch backend. The event file is a TFRecord file of Event protos, first the file version.
"""

import io
import itertools
import math
import os
import pathlib
import socket
import time
from typing import Callable, Optional

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.plugins.hparams import summary_v2 as hp
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.pr_curve import metadata as pr_metadata
from tensorboard.plugins.scalar import metadata as scalar_metadata

from octtl import protocol
from octtl.data import images as images_lib
from octtl.data import tfrecord
from octtl.nets import registry, scaling

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
    "crop": hp.Discrete(list(images_lib.CROPS)),
    "seed": hp.IntInterval(-(1 << 31), 1 << 31),
    "group_by_volume": hp.Discrete([False, True]),
}
BEST_METRICS = ("best/accuracy", "best/auc", "best/iterations_to_best", "test/accuracy", "test/auc")
# A training loss this many times the first batch's is divergence, as a NaN is: a finite 5e34 is no result.
DIVERGENCE_FACTOR = 1000.0
PR_THRESHOLDS = 201
_MINIMUM_COUNT = 1e-7  # the pr_curves plugin's floor under precision's and recall's denominators
_FILE_COUNTER = itertools.count()


class Writer:
    """One event file in `logdir` (created), as tf.summary.create_file_writer makes; a context manager.

    Args:
        logdir: The folder; TensorBoard reads every `events.out.tfevents.*` file in it.
    """

    def __init__(self, logdir):
        self.logdir = pathlib.Path(logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.path = self.logdir / (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                                   f"{os.getpid()}.{next(_FILE_COUNTER)}.v2")
        self._records = tfrecord.Writer(self.path)
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2",
                                    source_metadata=event_pb2.SourceMetadata(writer="octtl.training.events")))
        self.flush()

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def summary(self, summary: summary_pb2.Summary, step: int) -> None:
        """Writes a Summary proto at `step` (what tf.summary.experimental.write_raw_pb does)."""
        self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A float32 scalar for the scalars plugin, as tf.summary.scalar."""
        meta = scalar_metadata.create_summary_metadata(display_name=None, description=None)
        self.summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=tag, metadata=meta, tensor=_float32_tensor(np.float32(value)))]), step)

    def images(self, tag: str, images: np.ndarray, step: int, max_outputs: int = 3) -> None:
        """Gray images in 0..255 for the images plugin, as tf.summary.image(tag, images / 255, max_outputs).

        Args:
            images: (n, rows, cols, 1), any real dtype; scaled to [0, 1] and back to uint8 as TensorFlow does
                (x / 255 * 255.5, clipped, truncated), which keeps 0..255 integers as they are.
        """
        scaled = np.asarray(images, np.float32) / np.float32(255.0)
        pixels = np.clip(scaled * np.float32(255.5), 0, 255).astype(np.uint8)
        rows, cols = pixels.shape[1:3]
        strings = [str(cols).encode(), str(rows).encode()] + [_png(image) for image in pixels[:max_outputs]]
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=strings,
                                        tensor_shape=_shape([len(strings)]))
        meta = image_metadata.create_summary_metadata(display_name=None, description=None)
        self.summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)]),
                     step)

    def flush(self) -> None:
        """Makes what was written visible to TensorBoard."""
        self._records.flush()

    def close(self) -> None:
        """Flushes and closes the file."""
        self._records.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _shape(dims) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


def _float32_tensor(array) -> tensor_pb2.TensorProto:
    """A float32 TensorProto with its bytes in tensor_content, as TensorFlow's writer stores tensors."""
    array = np.asarray(array, "<f4")
    return tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(array.shape),
                                  tensor_content=array.tobytes())


def _png(image: np.ndarray) -> bytes:
    """One (rows, cols, 1) uint8 image as an 8-bit gray PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[..., 0], mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_hparams_config(logdir) -> None:
    """The hparams plugin's experiment definition (columns and metrics) at the top of a logdir, once."""
    logdir = pathlib.Path(logdir)
    if list(logdir.glob("events.out.tfevents.*")):
        return
    config = hp.hparams_config_pb(hparams=[hp.HParam(name, domain) for name, domain in HPARAMS.items()],
                                  metrics=[hp.Metric(m) for m in BEST_METRICS])
    with Writer(logdir) as writer:
        writer.summary(config, 0)


def log_start(writer: Writer, hparams: dict, trial: str, images: np.ndarray) -> None:
    """The run's hyperparameters (weights as imagenet, none or file) and four validation B-scans, at step 0."""
    values = {name: hparams[name] for name in HPARAMS}
    if values["weights"] not in ("imagenet", "none"):
        values["weights"] = "file"
    writer.summary(hp.hparams_pb({hp.HParam(name, domain): values[name] for name, domain in HPARAMS.items()},
                                 trial_id=trial), 0)
    writer.images("val/bscans", np.asarray(images[:4]), 0, max_outputs=4)


def log_check(writer: Writer, evaluation) -> None:
    """One validation check's loss, accuracy and (where defined) AUC, at its iteration."""
    writer.scalar("val/loss", evaluation.val_loss, evaluation.iteration)
    writer.scalar("val/accuracy", evaluation.val_accuracy, evaluation.iteration)
    if np.isfinite(evaluation.val_auc):
        writer.scalar("val/auc", evaluation.val_auc, evaluation.iteration)
    writer.flush()


def log_end(writer: Writer, best, val_labels, tested=None) -> None:
    """The best check's metrics and its PR curve (two classes), at the best iteration; its test-fold scores."""
    writer.scalar("best/accuracy", best.val_accuracy, best.iteration)
    if np.isfinite(best.val_auc):
        writer.scalar("best/auc", best.val_auc, best.iteration)
    writer.scalar("best/iterations_to_best", best.iteration, best.iteration)
    if tested is not None:
        writer.scalar("test/accuracy", tested.val_accuracy, best.iteration)
        if np.isfinite(tested.val_auc):
            writer.scalar("test/auc", tested.val_auc, best.iteration)
    if getattr(best, "p_fluid", None) is not None:
        writer.summary(pr_curve_pb("val/pr_curve_at_best", np.asarray(val_labels, bool),
                                   np.asarray(best.p_fluid, np.float32)), best.iteration)
    writer.flush()


def pr_curve_pb(name: str, labels: np.ndarray, predictions: np.ndarray,
                num_thresholds: int = PR_THRESHOLDS) -> summary_pb2.Summary:
    """The pr_curves plugin's summary, as tensorboard.plugins.pr_curve.summary.pb computes it (without TF).

    Rows of the (6, num_thresholds) float32 tensor: true positives, false positives, true negatives, false
    negatives, precision, recall at thresholds i / (num_thresholds - 1).
    """
    buckets = np.int32(np.floor(predictions * (num_thresholds - 1)))
    positive = labels.astype(float)
    span = (0, num_thresholds - 1)
    tp_buckets, _ = np.histogram(buckets, bins=num_thresholds, range=span, weights=positive)
    fp_buckets, _ = np.histogram(buckets, bins=num_thresholds, range=span, weights=1.0 - positive)
    tp = np.cumsum(tp_buckets[::-1])[::-1]
    fp = np.cumsum(fp_buckets[::-1])[::-1]
    tn, fn = fp[0] - fp, tp[0] - tp
    precision = tp / np.maximum(_MINIMUM_COUNT, tp + fp)
    recall = tp / np.maximum(_MINIMUM_COUNT, tp + fn)
    meta = pr_metadata.create_summary_metadata(display_name=name, description="", num_thresholds=num_thresholds)
    data = np.float32(np.stack((tp, fp, tn, fn, precision, recall)))
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"{name}/pr_curves", metadata=meta,
                                                                tensor=_float32_tensor(data))])


class StepLog:
    """Per-iteration training loss/accuracy; says when the loss is non-finite or exploding (divergence).

    octtl.training.fitting.StepLogger is its Keras callback: it calls `update` after every batch and stops training
    when it returns True.

    Args:
        writer: The run's Writer.
        iteration: Returns the number of iterations finished before the current one.
        first_loss: The run's first loss where an earlier phase had it (two_phase): the second phase starts from
            the head's best, whose loss can be near zero, so its own first one would make any rise look explosive.
    """

    def __init__(self, writer: Writer, iteration: Callable[[], int], first_loss: Optional[float] = None):
        self._writer = writer
        self._iteration = iteration
        self.first_loss: Optional[float] = first_loss
        self.diverged = None  # (iteration, loss, why) once diverged

    def update(self, logs: Optional[dict]) -> bool:
        """Logs one iteration's loss and accuracy; True (and `diverged` set) where training must stop."""
        logs = logs or {}
        iteration = self._iteration() + 1  # the early stop counts after this one
        loss = float(logs.get("loss", math.nan))
        if self.first_loss is None and math.isfinite(loss):
            self.first_loss = loss
        why = ""
        if math.isfinite(loss) and self.first_loss and loss > DIVERGENCE_FACTOR * self.first_loss:
            why = f", over {DIVERGENCE_FACTOR:g} times the first iteration's {self.first_loss:.4g}: diverged"
        if not math.isfinite(loss) or why:
            self.diverged = (iteration, loss, why)
            return True
        self._writer.scalar("train/loss", loss, iteration)
        if "accuracy" in logs:
            self._writer.scalar("train/accuracy", float(logs["accuracy"]), iteration)
        return False

