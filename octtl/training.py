"""Trains one architecture at one batch size on one fold with the paper's protocol (section II-A).

SGD with momentum on cross-entropy, training data reshuffled every epoch, validation
loss checked `checks_per_epoch` times per epoch with the half-epoch early stop, and the
model of highest validation accuracy kept with the iteration it was reached at.

Everything a run produces lands in `LOGDIR/{design}/{arch}/batch{batch}/fold{fold}/`:
result.json (written last, atomically: its presence means the run finished),
predictions.csv, flags.txt, best.keras and TensorBoard event files.
"""

import csv
import dataclasses
import json
import math
import os
import pathlib
import shutil
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.pr_curve import summary as pr_summary

from octtl import architectures, callbacks, data, folds, models, records
from octtl.volumes import InputError

RESULT = "result.json"
PREDICTIONS = "predictions.csv"
FLAGS_FILE = "flags.txt"
BEST_MODEL = "best.keras"
PREDICTION_COLUMNS = ("volume_id", "slice", "label", "p_fluid")


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run's settings; the paper's values are the defaults."""

    data_dir: str
    logdir: str
    arch: str
    batch: int
    design: str = "baseline"
    folds: int = 10
    fold: int = 0
    weights: str = "imagenet"
    weights_dir: Optional[str] = None
    lr: float = 1e-4
    momentum: float = 0.9
    max_epochs: int = 10
    checks_per_epoch: int = 2
    patience: int = 5
    seed: int = 0
    group_by_volume: bool = False
    image_size: Optional[int] = None
    preprocess: str = "paper"
    crop: str = "center"
    eval_batch: Optional[int] = None
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "default"
    early_stop: bool = True
    max_iterations: Optional[int] = None
    eval_every: Optional[int] = None
    overwrite: bool = False

    @property
    def size(self) -> int:
        return self.image_size or architectures.get(self.arch).input_size

    @property
    def validation_batch(self) -> int:
        # Evaluation keeps no gradients or optimizer state, so a larger batch fits.
        return self.eval_batch or max(2 * self.batch, 64)


class RunFailed(Exception):
    """Training diverged or ran out of memory; recorded as status 'failed' in result.json."""


def run_dir(logdir, design: str, arch: str, batch: int, fold: int) -> pathlib.Path:
    return pathlib.Path(logdir) / design / arch / f"batch{batch}" / f"fold{fold}"


def configure_devices(mixed_precision: bool) -> list:
    """Memory growth on every GPU (a sweep shares the card), and the mixed-precision policy."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # Already initialised by an earlier run in this process: growth was set then.
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    return gpus


def validate(config: Config, metadata: data.Metadata):
    """Fails early, naming the flag, on settings that cannot run."""
    if config.arch not in architectures.ARCHITECTURES:
        raise InputError(f"--arch={config.arch}: unknown; choose from {', '.join(architectures.ARCHITECTURES)}")
    if config.design not in folds.DESIGNS:
        raise InputError(f"--design={config.design}: choose from {', '.join(folds.DESIGNS)}")
    for name in ("batch", "max_epochs", "checks_per_epoch", "folds"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name}={getattr(config, name)}: must be >= 1")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise InputError(f"--lr={config.lr}: must be a finite number > 0")
    if not 0 <= config.momentum < 1:
        raise InputError(f"--momentum={config.momentum}: must be in [0, 1)")
    if config.preprocess not in models.PREPROCESS:
        raise InputError(f"--preprocess={config.preprocess}: choose from {', '.join(models.PREPROCESS)}")
    if not config.early_stop and not config.max_iterations and config.max_epochs < 1:
        raise InputError("--early_stop=false needs --max_iterations or --max_epochs")
    if len(metadata) == 0:
        raise InputError(f"{config.data_dir}: no examples")


def splits(config: Config, metadata: data.Metadata, fold: int):
    groups = metadata.volume_ids if config.group_by_volume else None
    try:
        return folds.split(metadata.labels, config.design, fold, config.folds, config.seed, groups)
    except ValueError as e:
        raise InputError(f"{config.data_dir}: {e}") from None


def train(config: Config, fold: int, flags_text: str = "", verbose: int = 1) -> dict:
    """Runs (or, when finished before, reads back) one fold; returns the result dict."""
    out = run_dir(config.logdir, config.design, config.arch, config.batch, fold)
    result_path = out / RESULT
    if result_path.is_file() and not config.overwrite:
        result = json.loads(result_path.read_text())
        result["skipped"] = True
        return result
    metadata = data.read_metadata(config.data_dir)
    validate(config, metadata)
    train_idx, val_idx = splits(config, metadata, fold)
    if config.batch > len(train_idx):
        raise InputError(f"--batch={config.batch}: larger than the training set of fold {fold} "
                         f"({len(train_idx)} B-scans, design {config.design})")
    if out.exists():
        # No result.json: an interrupted run. Its partial events and checkpoints would mix
        # with the new ones, so start from an empty folder.
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / FLAGS_FILE).write_text(flags_text)

    started = time.time()
    base = {
        "arch": config.arch, "batch": config.batch, "design": config.design, "fold": fold,
        "folds": config.folds, "seed": config.seed, "weights": config.weights,
        "image_size": config.size, "preprocess": config.preprocess, "crop": config.crop,
        "group_by_volume": config.group_by_volume, "lr": config.lr, "momentum": config.momentum,
        "train_size": int(len(train_idx)), "val_size": int(len(val_idx)),
        "data_dir": str(config.data_dir),
    }
    try:
        result = _fit(config, fold, metadata, train_idx, val_idx, out, verbose)
        result = {**base, **result, "status": "ok"}
    except RunFailed as e:
        result = {**base, "status": "failed", "error": str(e)}
    result["wall_seconds"] = time.time() - started
    _write_json(result_path, result)
    return result


def _datasets(config, metadata, train_idx, val_idx):
    rescale = "paper" if config.preprocess == "paper" else "none"
    common = dict(records_dir=config.data_dir, image_size=config.size, crop_mode=config.crop,
                  rescale_mode=rescale, num_examples=len(metadata))
    train_ds = data.dataset(indices=train_idx, batch_size=config.batch, training=True, seed=config.seed,
                            drop_remainder=True, **common)
    val_ds = data.dataset(indices=val_idx, batch_size=config.validation_batch, training=False, **common)
    return train_ds, val_ds


def _strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise InputError(f"--strategy={name}: choose default or mirrored")


def _fit(config, fold, metadata, train_idx, val_idx, out, verbose):
    keras.utils.set_random_seed(config.seed)
    train_ds, val_ds = _datasets(config, metadata, train_idx, val_idx)
    val_labels = metadata.labels[val_idx]
    steps_per_epoch = len(train_idx) // config.batch  # MATLAB drops the last partial mini-batch.
    epochs = config.max_epochs
    if config.max_iterations and not config.early_stop:
        # The paper's fixed-iteration experiment: as many epochs as the iterations need.
        epochs = math.ceil(config.max_iterations / steps_per_epoch)

    with _strategy(config.strategy).scope():
        model = models.build(config.arch, num_classes=2, weights=config.weights, image_size=config.size,
                             weights_dir=config.weights_dir, preprocess=config.preprocess)
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=config.jit_compile)

    writer = tf.summary.create_file_writer(str(out))
    eval_seconds = [0.0]

    def predict():
        start = time.perf_counter()
        probabilities = model.predict(val_ds, verbose=0)
        eval_seconds[0] += time.perf_counter() - start
        return probabilities

    def on_evaluation(e: callbacks.Evaluation):
        if not np.isfinite(e.val_loss):
            raise RunFailed(f"validation loss is {e.val_loss} at iteration {e.iteration}")
        with writer.as_default(step=e.iteration):
            tf.summary.scalar("val/loss", e.val_loss)
            tf.summary.scalar("val/accuracy", e.val_accuracy)
            if np.isfinite(e.val_auc):
                tf.summary.scalar("val/auc", e.val_auc)

    stop = callbacks.HalfEpochEarlyStop(
        predict, val_labels, steps_per_epoch, config.checks_per_epoch, config.patience,
        early_stop=config.early_stop, max_iterations=config.max_iterations, eval_every=config.eval_every,
        on_evaluation=on_evaluation)
    step_logger = _StepLogger(writer, stop)
    _log_start(writer, config, fold, val_ds)

    fit_start = time.perf_counter()
    try:
        model.fit(train_ds, epochs=epochs, verbose=verbose, shuffle=False, callbacks=[step_logger, stop])
    except tf.errors.ResourceExhaustedError as e:
        raise RunFailed(f"out of memory at batch {config.batch}: {e.message.splitlines()[0]}") from None
    if step_logger.diverged:
        raise RunFailed(f"training loss is {step_logger.diverged[1]} at iteration {step_logger.diverged[0]}")
    train_seconds = time.perf_counter() - fit_start - eval_seconds[0]
    if stop.best is None:
        raise RunFailed("no validation check ran (fewer iterations than one check interval)")

    stop.restore_best()
    best = stop.best
    _write_predictions(out / PREDICTIONS, metadata, val_idx, best.p_fluid)
    _save_model(model, out / BEST_MODEL)
    _log_end(writer, config, fold, best, val_labels)
    writer.close()
    return {
        "best_accuracy": best.val_accuracy,
        "best_auc": None if math.isnan(best.val_auc) else best.val_auc,
        "iterations_to_best": best.iteration,
        "iterations": stop.iteration,
        "epochs": stop.epochs_started,
        "steps_per_epoch": steps_per_epoch,
        "early_stopped": stop.early_stopped,
        "checks": [e.record() for e in stop.evaluations],
        "train_images_per_second": stop.iteration * config.batch / max(train_seconds, 1e-9),
        "params": int(model.count_params()),
    }


class _StepLogger(keras.callbacks.Callback):
    """Per-iteration training loss/accuracy to TensorBoard; stops on a non-finite loss."""

    def __init__(self, writer, stop: callbacks.HalfEpochEarlyStop):
        super().__init__()
        self._writer = writer
        self._stop = stop
        self.diverged = None

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        iteration = self._stop.iteration + 1  # the early-stop callback runs after this one
        loss = float(logs.get("loss", math.nan))
        if not math.isfinite(loss):
            self.diverged = (iteration, loss)
            self.model.stop_training = True
            return
        with self._writer.as_default(step=iteration):
            tf.summary.scalar("train/loss", loss)
            if "accuracy" in logs:
                tf.summary.scalar("train/accuracy", float(logs["accuracy"]))


HPARAMS = ("arch", "batch", "design", "fold", "weights", "image_size", "lr", "momentum", "preprocess",
           "seed", "group_by_volume")
BEST_METRICS = ("best/accuracy", "best/auc", "best/iterations_to_best")


def _log_start(writer, config, fold, val_ds):
    values = {**dataclasses.asdict(config), "fold": fold, "image_size": config.size}
    with writer.as_default(step=0):
        trial = f"{config.design}/{config.arch}/batch{config.batch}/fold{fold}"
        hp.hparams({name: values[name] for name in HPARAMS}, trial_id=trial)
        images, _ = next(iter(val_ds))
        images = tf.cast(images[:4], tf.float32)
        # Back to [0, 1] whichever rescaling the pipeline used.
        low, high = tf.reduce_min(images), tf.reduce_max(images)
        tf.summary.image("val/bscans", (images - low) / tf.maximum(high - low, 1e-6), max_outputs=4)


def _log_end(writer, config, fold, best, val_labels):
    with writer.as_default(step=best.iteration):
        tf.summary.scalar("best/accuracy", best.val_accuracy)
        if np.isfinite(best.val_auc):
            tf.summary.scalar("best/auc", best.val_auc)
        tf.summary.scalar("best/iterations_to_best", best.iteration)
        pb = pr_summary.pb("val/pr_curve_at_best", labels=np.asarray(val_labels, bool),
                           predictions=np.asarray(best.p_fluid, np.float32), num_thresholds=201)
        tf.summary.experimental.write_raw_pb(pb.SerializeToString(), step=best.iteration)
    writer.flush()


def write_hparams_config(logdir):
    """The hparams plugin's experiment definition (columns and metrics) at the top of a logdir, once."""
    logdir = pathlib.Path(logdir)
    if list(logdir.glob("events.out.tfevents.*")):
        return
    with tf.summary.create_file_writer(str(logdir)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in HPARAMS],
                          metrics=[hp.Metric(m) for m in BEST_METRICS])


def _write_predictions(path, metadata, val_idx, p_fluid):
    tmp = pathlib.Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        for i, p in zip(val_idx, p_fluid):
            writer.writerow([metadata.volume_ids[i], int(metadata.slices[i]), int(metadata.labels[i]),
                             repr(float(p))])
    os.replace(tmp, path)


def _save_model(model, path):
    tmp = pathlib.Path(str(path)[: -len(".keras")] + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _write_json(path, value):
    tmp = pathlib.Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def summary_line(result: dict) -> str:
    """The one line printed at the end of a run."""
    head = f"{result['arch']} {result['design']} batch {result['batch']} fold {result['fold']}"
    if result.get("status") != "ok":
        return f"{head}: FAILED: {result.get('error')}"
    auc = "n/a" if result["best_auc"] is None else f"{result['best_auc']:.4f}"
    return (f"{head}: best accuracy {result['best_accuracy']:.4f}, AUC {auc}, "
            f"iterations to best {result['iterations_to_best']} of {result['iterations']}"
            + (" (already done)" if result.get("skipped") else ""))
