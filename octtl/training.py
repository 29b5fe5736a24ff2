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
import sys
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.pr_curve import summary as pr_summary

from octtl import architectures, callbacks, data, folds, models, pretrained, protocol
from octtl.errors import InputError, WeightsError

RESULT = "result.json"
PREDICTIONS = "predictions.csv"
FLAGS_FILE = "flags.txt"
BEST_MODEL = "best.keras"
PREDICTION_COLUMNS = ("volume_id", "slice", "label", "p_fluid", "source")


@dataclasses.dataclass(frozen=True)
class Config:
    """One training run's settings; the paper's values are the defaults. Field names are octtl.train's flags."""

    data_dir: str
    logdir: str
    arch: str
    batch: int
    design: str = protocol.DESIGNS[0]
    folds: int = protocol.FOLDS
    fold: int = 0
    weights: str = "imagenet"
    weights_fallback: Optional[str] = None
    weights_dir: Optional[str] = None
    lr: float = protocol.LR
    momentum: float = protocol.MOMENTUM
    max_epochs: int = protocol.MAX_EPOCHS
    checks_per_epoch: int = protocol.CHECKS_PER_EPOCH
    patience: int = protocol.PATIENCE
    seed: int = protocol.SEED
    group_by_volume: bool = False
    image_size: Optional[int] = None
    preprocess: str = "auto"
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
        return protocol.native_size(self.arch, self.image_size)

    @property
    def validation_batch(self) -> int:
        return protocol.eval_batch(self.batch, self.eval_batch)


class RunFailed(Exception):
    """Training diverged or ran out of memory; recorded as status 'failed' in result.json."""


# A training loss this many times the first batch's is divergence, as a NaN is: a finite 5e34 is no result.
DIVERGENCE_FACTOR = 1000.0


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
    if config.arch not in architectures.ARCHITECTURES and config.arch not in architectures.TESTING:
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
    if config.preprocess not in models.PREPROCESS_CHOICES:
        raise InputError(f"--preprocess={config.preprocess}: choose from {', '.join(models.PREPROCESS_CHOICES)}")
    if config.crop not in data.CROPS:
        raise InputError(f"--crop={config.crop}: choose from {', '.join(data.CROPS)}")
    minimum = architectures.get(config.arch).min_input_size
    if config.size < minimum:
        raise InputError(f"--image_size={config.size}: {config.arch} needs at least {minimum} px")
    if not config.early_stop and not config.max_iterations and config.max_epochs < 1:
        raise InputError("--early_stop=false needs --max_iterations or --max_epochs")
    if len(metadata) == 0:
        raise InputError(f"{config.data_dir}: no examples")
    if len(np.unique(metadata.labels)) < 2:
        raise InputError(f"{config.data_dir}: every B-scan has label {int(metadata.labels[0])}; "
                         "a classifier needs both classes")


def splits(config: Config, metadata: data.Metadata, fold: int):
    groups = metadata.volume_ids if config.group_by_volume else None
    try:
        return folds.split(metadata.labels, config.design, fold, config.folds, config.seed, groups)
    except ValueError as e:
        raise InputError(f"{config.data_dir}: {e}") from None


def resolve_weights(config: Config, say: Callable[[str], None] = print) -> pretrained.Weights:
    """The weights a run loads; with --weights_fallback=none, random ones (said in one line) when ImageNet's fail."""
    try:
        return pretrained.resolve(config.arch, config.weights, weights_dir=config.weights_dir, say=say)
    except WeightsError as e:
        if config.weights != "imagenet" or config.weights_fallback != "none":
            raise
        say(f"train: no ImageNet weights for {config.arch} ({e}); --weights_fallback=none: training from scratch")
        return pretrained.resolve(config.arch, "none")


def expected_preprocess(config: Config, result: dict) -> str:
    """The preprocessing `config` asks for, given what the finished run `result` loaded (no weights touched)."""
    if config.preprocess != "auto":
        return config.preprocess
    return "backbone" if result.get("weights_scaling") else "paper"


def stale_reason(config: Config, result: dict) -> Optional[str]:
    """Why a finished run's result does not answer `config`; None when it does."""
    if result.get("preprocess") != expected_preprocess(config, result):
        return (f"recorded --preprocess={result.get('preprocess')} but this run resolves to "
                f"{expected_preprocess(config, result)}")
    return None


def read_result(path) -> Optional[dict]:
    """A run's result.json, or None when there is none yet."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return None


def train(config: Config, fold: int, say: Callable[[str], None] = print, progress: Optional[bool] = None) -> dict:
    """Runs (or, when finished before, reads back) one fold; returns the result dict.

    Everything the run needs (data, folds, weights, the network) is checked before its folder is created, so a
    refusal leaves nothing behind.

    Args:
        config: The run's settings.
        fold: The fold to run.
        say: Where the run's console lines go.
        progress: Keras' progress bar during training; default: only when stdout is a terminal.
    """
    out = run_dir(config.logdir, config.design, config.arch, config.batch, fold)
    result_path = out / RESULT
    previous = read_result(result_path)
    if previous is not None and not config.overwrite:
        reason = stale_reason(config, previous)
        if reason is None:
            return {**previous, "skipped": True, "run_dir": str(out)}
        say(f"train: {out}: {reason}; training it again")
    metadata = data.read_metadata(config.data_dir)
    validate(config, metadata)
    train_idx, val_idx = splits(config, metadata, fold)
    if config.batch > len(train_idx):
        raise InputError(f"--batch={config.batch}: larger than the training set of fold {fold} "
                         f"({len(train_idx)} B-scans, design {config.design})")
    if len(np.unique(metadata.labels[train_idx])) < 2:
        raise InputError(f"{config.data_dir}: the training set of fold {fold} ({config.design}) holds one class; "
                         "use fewer --folds or another --seed")
    weights = resolve_weights(config, say)
    scaling = models.resolve_preprocess(config.preprocess, weights, config.arch)
    model = _compiled_model(config, weights, scaling)

    head = f"{config.arch} {config.design} batch {config.batch} fold {fold}"
    say(f"train: {head} -> {out}")
    say(f"train: weights: {weights.describe()}"
        + (f", trained on {weights.scaling} inputs ({models.SCALING_WORDS[weights.scaling]})"
           if weights.scaling else ""))
    say(f"train: input scaling: {scaling.describe()}")
    ratio = models.scaling_mismatch(scaling, weights.scaling)
    if ratio:
        say(f"train: warning: --preprocess={scaling.preprocess} feeds inputs whose range differs {ratio:.0f}x from "
            f"what these {weights.scaling} weights were trained on: transfer will be weak (--preprocess=auto "
            "matches them)")
    if len(np.unique(metadata.labels[val_idx])) < 2:
        say(f"train: note: the validation set of fold {fold} holds one class: its AUC is undefined")

    write_hparams_config(config.logdir)
    if out.exists():
        # No result.json (or a stale one): its events and checkpoints would mix with the new ones.
        shutil.rmtree(out)
    out.mkdir(parents=True)
    used = dataclasses.replace(config, fold=fold, weights=weights.requested, preprocess=scaling.preprocess,
                               image_size=config.size, overwrite=False, weights_fallback=None)
    (out / FLAGS_FILE).write_text(flags_text(used))

    started = time.time()
    base = {
        "arch": config.arch, "batch": config.batch, "design": config.design, "fold": fold,
        "folds": config.folds, "seed": config.seed, "weights": weights.requested, "weights_file": weights.path,
        "weights_scaling": weights.scaling, "image_size": config.size, "preprocess": scaling.preprocess,
        "crop": config.crop, "group_by_volume": config.group_by_volume, "lr": config.lr,
        "momentum": config.momentum, "train_size": int(len(train_idx)), "val_size": int(len(val_idx)),
        "majority_rate": _majority(metadata.labels[val_idx]), "data_dir": str(config.data_dir),
    }
    if progress is None:
        progress = sys.stdout.isatty()
    try:
        result = _fit(used, model, fold, metadata, train_idx, val_idx, out, say, progress)
        result = {**base, **result, "status": "ok"}
    except RunFailed as e:
        result = {**base, "status": "failed", "error": str(e)}
    result["wall_seconds"] = time.time() - started
    _write_json(result_path, result)
    return {**result, "run_dir": str(out)}


def flags_text(config: Config) -> str:
    """octtl.train's flags for `config`, one per line: what flags.txt holds, and `--flagfile` reruns."""
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None or field.name == "overwrite":
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        lines.append(f"--{field.name}={value}")
    return "\n".join(lines) + "\n"


def _majority(labels) -> float:
    share = float(np.mean(np.asarray(labels) != 0))
    return max(share, 1.0 - share)


def _datasets(config, metadata, train_idx, val_idx):
    common = dict(records_dir=config.data_dir, image_size=config.size, crop_mode=config.crop,
                  num_examples=len(metadata))
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


def _compiled_model(config, weights, scaling):
    """The network with its weights, compiled with the paper's optimizer; seeded so a run repeats exactly."""
    keras.utils.set_random_seed(config.seed)
    with _strategy(config.strategy).scope():
        try:
            model = models.build(config.arch, num_classes=2, weights=weights, image_size=config.size,
                                 preprocess=scaling)
        except WeightsError as e:
            raise WeightsError(f"--weights={config.weights}: {e}") from None
        model.compile(
            optimizer=keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum),
            loss=keras.losses.SparseCategoricalCrossentropy(),
            metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            jit_compile=config.jit_compile)
    return model


def _fit(config, model, fold, metadata, train_idx, val_idx, out, say, progress):
    keras.utils.set_random_seed(config.seed)
    train_ds, val_ds = _datasets(config, metadata, train_idx, val_idx)
    val_labels = metadata.labels[val_idx]
    steps_per_epoch = len(train_idx) // config.batch  # MATLAB drops the last partial mini-batch.
    epochs = config.max_epochs
    if config.max_iterations and not config.early_stop:
        # The paper's fixed-iteration experiment: as many epochs as the iterations need.
        epochs = math.ceil(config.max_iterations / steps_per_epoch)
    checks = callbacks.check_steps(steps_per_epoch, config.checks_per_epoch)
    say(f"train: {len(train_idx)} training, {len(val_idx)} validation B-scans (majority class "
        f"{_majority(val_labels):.4f}); {steps_per_epoch} iterations per epoch, up to {epochs} epochs; validation "
        f"checks at iterations {', '.join(map(str, checks))} of each epoch")

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
        line = check_line(e, stop, steps_per_epoch, config.patience if config.early_stop else None)
        # On a terminal the progress bar owns the line: clear it, print, and let the bar redraw below.
        say(("\r\x1b[2K" if progress else "") + line)

    stop = callbacks.HalfEpochEarlyStop(
        predict, val_labels, steps_per_epoch, config.checks_per_epoch, config.patience,
        early_stop=config.early_stop, max_iterations=config.max_iterations, eval_every=config.eval_every,
        on_evaluation=on_evaluation)
    step_logger = _StepLogger(writer, stop)
    _log_start(writer, config, fold, val_ds)

    fit_start = time.perf_counter()
    try:
        model.fit(train_ds, epochs=epochs, verbose=1 if progress else 0, shuffle=False,
                  callbacks=[step_logger, stop])
    except tf.errors.ResourceExhaustedError as e:
        raise RunFailed(f"out of memory at batch {config.batch}: {e.message.splitlines()[0]}") from None
    if step_logger.diverged:
        iteration, loss, why = step_logger.diverged
        raise RunFailed(f"training loss is {loss} at iteration {iteration}{why}")
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


def check_line(e: callbacks.Evaluation, stop: callbacks.HalfEpochEarlyStop, steps_per_epoch: int,
               patience: Optional[int]) -> str:
    """One validation check (or --eval_every point) on the console: metrics, best so far, early-stop countdown."""
    auc = "n/a" if math.isnan(e.val_auc) else f"{e.val_auc:.4f}"
    kind = "check" if e.check else "eval"
    epoch = (e.iteration - 1) // steps_per_epoch + 1
    line = (f"{kind} at iteration {e.iteration} (epoch {epoch}): val loss {e.val_loss:.4f}, accuracy "
            f"{e.val_accuracy:.4f}, AUC {auc}; best accuracy {stop.best.val_accuracy:.4f} at iteration "
            f"{stop.best.iteration}")
    if e.check and patience is not None:
        left = patience + 1 - stop.wait
        line += (f"; early stop after {left} more check{'s' * (left != 1)} without a lower loss"
                 if not stop.early_stopped else "; early stop: loss did not improve")
    return line


class _StepLogger(keras.callbacks.Callback):
    """Per-iteration training loss/accuracy to TensorBoard; stops on a non-finite or exploding loss."""

    def __init__(self, writer, stop: callbacks.HalfEpochEarlyStop):
        super().__init__()
        self._writer = writer
        self._stop = stop
        self._first_loss = None
        self.diverged = None

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        iteration = self._stop.iteration + 1  # the early-stop callback runs after this one
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


# Typed domains, so TensorBoard's hparams dashboard filters and sorts each column as what it is.
HPARAMS = {
    "arch": hp.Discrete(sorted(architectures.ARCHITECTURES)),
    "batch": hp.IntInterval(1, 1 << 16),
    "design": hp.Discrete(list(folds.DESIGNS)),
    "fold": hp.IntInterval(0, 1 << 16),
    "weights": hp.Discrete(["imagenet", "none", "file"]),
    "image_size": hp.IntInterval(1, 1 << 16),
    "lr": hp.RealInterval(0.0, math.inf),
    "momentum": hp.RealInterval(0.0, 1.0),
    "preprocess": hp.Discrete(list(models.PREPROCESS)),
    "crop": hp.Discrete(list(data.CROPS)),
    "seed": hp.IntInterval(-(1 << 31), 1 << 31),
    "group_by_volume": hp.Discrete([False, True]),
}
BEST_METRICS = ("best/accuracy", "best/auc", "best/iterations_to_best")


def _log_start(writer, config, fold, val_ds):
    values = {**dataclasses.asdict(config), "fold": fold, "image_size": config.size}
    if values["weights"] not in ("imagenet", "none"):
        values["weights"] = "file"
    with writer.as_default(step=0):
        trial = f"{config.design}/{config.arch}/batch{config.batch}/fold{fold}"
        hp.hparams({hp.HParam(name, domain): values[name] for name, domain in HPARAMS.items()}, trial_id=trial)
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
        hp.hparams_config(hparams=[hp.HParam(name, domain) for name, domain in HPARAMS.items()],
                          metrics=[hp.Metric(m) for m in BEST_METRICS])


def _write_predictions(path, metadata, val_idx, p_fluid):
    tmp = pathlib.Path(str(path) + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(PREDICTION_COLUMNS)
        for i, p in zip(val_idx, p_fluid):
            writer.writerow([metadata.volume_ids[i], int(metadata.slices[i]), int(metadata.labels[i]),
                             repr(float(p)), metadata.sources[i]])
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
    where = f" ({result['run_dir']})" if result.get("run_dir") else ""
    if result.get("status") != "ok":
        return f"{head}: FAILED: {result.get('error')}{where}"
    auc = "n/a" if result["best_auc"] is None else f"{result['best_auc']:.4f}"
    majority = f" (majority class {result['majority_rate']:.4f})" if result.get("majority_rate") else ""
    weights = {"imagenet": "ImageNet weights", "none": "no pretrained weights"}.get(
        result.get("weights"), f"weights {result.get('weights')}")
    return (f"{head}: best accuracy {result['best_accuracy']:.4f}{majority}, AUC {auc}, "
            f"iterations to best {result['iterations_to_best']} of {result['iterations']}; {weights}, "
            f"{result.get('preprocess')} scaling{where}" + (" (already done)" if result.get("skipped") else ""))
