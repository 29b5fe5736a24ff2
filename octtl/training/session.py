"""Trains a network with the paper's protocol (section II-A): one run, or many runs in one session.

SGD with momentum on cross-entropy, training data reshuffled every epoch, validation loss checked
`checks_per_epoch` times per epoch with the half-epoch early stop, and the model of highest validation
accuracy kept with the iteration it was reached at. A run's outputs follow the run-folder contract
(octtl.runs): result.json last and atomically, predictions.csv, flags.txt, best.keras, TensorBoard events.

A `Session` decodes the records once into memory, builds and compiles the network once, and then trains any
number of (design, fold) runs on it. Before each run it restores the initial weights (Dropout's seed state
included), the optimizer's slots and iteration counter, and reseeds every generator, so each run gives exactly
what a fresh process of the same code gives; batch shapes stay fixed (validation batches are padded), so
nothing is traced twice. `train` is a session of one run.
"""

import csv
import dataclasses
import functools
import math
import pathlib
import shutil
import sys
import time
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from octtl import outputs, protocol, runs

from octtl.data import augment

from octtl.training import early_stop

from octtl.data import pipeline

from octtl.data import denoise

from octtl.training import tensorboard

from octtl.data import folds

from octtl.nets import models
from octtl.nets import scaling

from octtl.nets import pretrained

from octtl.data import records
from octtl.errors import InputError, WeightsError
from octtl.training.config import Config, flags_text, planned




class RunFailed(Exception):
    """Training diverged or ran out of memory; recorded as status 'failed' in result.json."""


def configure_devices(mixed_precision: bool) -> list:
    """Memory growth on every GPU (runs and workers share the card), and the mixed-precision policy."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            pass  # Already initialised by an earlier session in this process: growth was set then.
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")
    return gpus


def check_settings(config: Config):
    """Fails, naming the flag, on settings that cannot run, before any data is read or anything is printed."""
    from octtl.nets import registry

    if config.arch not in registry.ARCHITECTURES and config.arch not in registry.TESTING:
        raise InputError(f"--arch={config.arch}: unknown; choose from {', '.join(registry.ARCHITECTURES)}")
    if config.design not in protocol.DESIGNS:
        raise InputError(f"--design={config.design}: choose from {', '.join(protocol.DESIGNS)}")
    for name in ("batch", "max_epochs", "checks_per_epoch", "folds"):
        if getattr(config, name) < 1:
            raise InputError(f"--{name}={getattr(config, name)}: must be >= 1")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise InputError(f"--lr={config.lr}: must be a finite number > 0")
    if not 0 <= config.momentum < 1:
        raise InputError(f"--momentum={config.momentum}: must be in [0, 1)")
    if config.preprocess not in scaling.PREPROCESS_CHOICES:
        raise InputError(f"--preprocess={config.preprocess}: choose from {', '.join(scaling.PREPROCESS_CHOICES)}")
    if config.crop not in pipeline.CROPS:
        raise InputError(f"--crop={config.crop}: choose from {', '.join(pipeline.CROPS)}")
    minimum = registry.get(config.arch).min_input_size
    if config.size < minimum:
        raise InputError(f"--image_size={config.size}: {config.arch} needs at least {minimum} px")
    augment.parse(config.augment)
    augment.check_strength(config.augment_strength)
    denoise.check(config.denoise, config.denoise_strength)


def validate(config: Config, metadata: records.Metadata):
    """Fails early, naming the flag or the data, on settings that cannot run on these data."""
    check_settings(config)
    if len(metadata) == 0:
        raise InputError(f"{config.data_dir}: no examples")
    if len(np.unique(metadata.labels)) < 2:
        raise InputError(f"{config.data_dir}: every B-scan has label {int(metadata.labels[0])}; "
                         "a classifier needs both classes")


def splits(config: Config, metadata: records.Metadata, design: str, fold: int):
    """(train, validation) indices of one fold of one design, as the config's folds and grouping make them."""
    groups = metadata.volume_ids if config.group_by_volume else None
    try:
        return folds.split(metadata.labels, design, fold, config.folds, config.seed, groups)
    except ValueError as e:
        raise InputError(f"{config.data_dir}: {e}") from None


def resolve_weights(config: Config, say: Callable[[str], None] = print) -> pretrained.Weights:
    """The weights a run loads; with --weights_fallback=none, random ones (said in one line) when ImageNet's fail."""
    try:
        return pretrained.resolve(config.arch, config.weights, weights_dir=config.weights_dir, say=say)
    except WeightsError as e:
        if config.weights != "imagenet" or config.weights_fallback != "none":
            raise WeightsError(f"--weights={config.weights}: {e}") from None
        say(f"train: no ImageNet weights for {config.arch} ({e}); --weights_fallback=none: training from scratch")
        return pretrained.resolve(config.arch, "none")


def train(config: Config, fold: int, say: Callable[[str], None] = print, progress: Optional[bool] = None) -> dict:
    """Runs (or, when done before, reads back) one fold of `config.design`; returns the result dict.

    A finished run whose configuration differs (octtl.runs.stale_reason) is trained again, saying why.
    """
    return Session(config, say=say, progress=progress, redo_stale=True).run(config.design, fold)


class Session:
    """One network at one batch size on one dataset: decoded once, built and compiled once, reset per run.

    Args:
        config: The settings every run of the session shares (its `design` and `fold` are ignored).
        say: Where the console lines go.
        progress: Keras' progress bar during training; default: only when stdout is a terminal.
        redo_stale: Train again a finished run whose configuration differs; else leave it and say so.
    """

    def __init__(self, config: Config, say: Callable[[str], None] = print, progress: Optional[bool] = None,
                 redo_stale: bool = True):
        check_settings(config)
        self.config, self.say, self.redo_stale = config, say, redo_stale
        self.progress = sys.stdout.isatty() if progress is None else progress
        self._identity = None
        self._ready = False

    @property
    def identity(self) -> dict:
        """The dataset's identity (manifest hash and size), recorded in every result."""
        if self._identity is None:
            self._identity = records.identity(self.config.data_dir)
        return self._identity

    def finished(self, design: str, fold: int) -> Optional[dict]:
        """The run's result when it is done for this session's configuration; None when it must be trained.

        Touches neither weights nor records' images. A stale result is reported in one line; with
        `redo_stale` off it is returned (marked `stale`) rather than trained again.
        """
        run = runs.Run(design, self.config.arch, self.config.batch, fold, self.config.variant_name)
        previous = runs.result_of(self.config.logdir, run)
        if previous is None or self.config.overwrite:
            return None
        reason = runs.stale_reason(previous, planned(self.config, self.identity, previous))
        if reason is None:
            return {**previous, "skipped": True, "run_dir": str(run.folder(self.config.logdir))}
        if self.redo_stale:
            self.say(f"train: {run.folder(self.config.logdir)}: stale ({reason}); training it again")
            return None
        self.say(f"train: {run.folder(self.config.logdir)}: stale ({reason}); left as it is (--overwrite redoes it)")
        return {**previous, "stale": reason, "run_dir": str(run.folder(self.config.logdir))}

    def run(self, design: str, fold: int) -> dict:
        """Trains one (design, fold) run, or reads it back when it is done; returns its result.

        Everything the run needs (data, folds, weights, network) is checked before its folder is created, so a
        refusal leaves nothing behind.
        """
        done = self.finished(design, fold)
        if done is not None:
            return done
        outputs.check_target(self.config.logdir, "--logdir", overwrite=True, folder=True)
        config = dataclasses.replace(self.config, design=design, fold=fold)
        run = runs.Run(design, config.arch, config.batch, fold, config.variant_name)
        out = run.folder(config.logdir)
        self.say(f"train: {run} -> {out}")
        self._prepare()
        train_idx, val_idx = splits(config, self.metadata, design, fold)
        if config.batch > len(train_idx):
            raise InputError(f"--batch={config.batch}: larger than the training set of fold {fold} "
                             f"({len(train_idx)} B-scans, design {design})")
        if len(np.unique(self.metadata.labels[train_idx])) < 2:
            raise InputError(f"{config.data_dir}: the training set of fold {fold} ({design}) holds one class; "
                             "use fewer --folds or another --seed")
        if len(np.unique(self.metadata.labels[val_idx])) < 2:
            self.say(f"train: note: the validation set of fold {fold} holds one class: its AUC is undefined")
        if out.exists():
            # No result.json (or a stale one): its events and checkpoints would mix with the new ones.
            shutil.rmtree(out)
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise InputError(f"--logdir={config.logdir}: cannot create {out} ({e.strerror or e})") from None
        tensorboard.write_hparams_config(config.logdir)
        used = dataclasses.replace(config, weights=self.weights.requested, preprocess=self.scaling.preprocess,
                                   image_size=config.size, overwrite=False, weights_fallback=None)
        outputs.write_text(out / runs.FLAGS_FILE, flags_text(used))

        started = time.time()
        base = {
            "arch": config.arch, "batch": config.batch, "design": design, "fold": fold,
            **planned(used, self.identity, {"weights_scaling": self.weights.scaling}),
            "weights_file": self.weights.path, "weights_scaling": self.weights.scaling,
            "train_size": int(len(train_idx)), "val_size": int(len(val_idx)),
            "majority_rate": _majority(self.metadata.labels[val_idx]), "data_dir": str(config.data_dir),
            "decode_seconds": self.decoded.seconds,  # once per session: denoising's cost is here, not per epoch
            # How the data was labelled, so predict labels new reference volumes alike after the data is gone.
            "fluid_labels": self.manifest.get("fluid_labels"), "min_fluid_voxels": self.manifest.get("min_fluid_voxels"),
        }
        try:
            result = {**base, **self._fit(used, train_idx, val_idx, out), "status": "ok"}
        except RunFailed as e:
            result = {**base, "status": "failed", "error": str(e)}
        result["wall_seconds"] = time.time() - started
        runs.write_result(out, result)
        return {**result, "run_dir": str(out)}

    def _prepare(self):
        """Reads, checks and decodes the data, resolves the weights and builds the network, once."""
        if self._ready:
            return
        config, say = self.config, self.say
        self.metadata = records.read_metadata(config.data_dir)
        self.manifest = records.read_manifest(config.data_dir)
        validate(config, self.metadata)
        self.identity  # noqa: B018  (a missing or unreadable manifest fails here, before any work)
        self.weights = resolve_weights(config, say)
        self.scaling = scaling.resolve_preprocess(config.preprocess, self.weights, config.arch)
        keras.utils.set_random_seed(config.seed)
        with _strategy(config.strategy).scope():
            try:
                self.model = models.build(config.arch, num_classes=2, weights=self.weights,
                                          image_size=config.size, preprocess=self.scaling)
            except WeightsError as e:
                raise WeightsError(f"--weights={config.weights}: {e}") from None
            self.model.compile(
                optimizer=keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum),
                loss=keras.losses.SparseCategoricalCrossentropy(),
                metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                jit_compile=config.jit_compile)
            self.model.optimizer.build(self.model.trainable_variables)
        self.augmentations = augment.parse(config.augment)
        self.margin = augment.margin(config.size, self.augmentations, config.augment_strength)
        view = (functools.partial(augment.view, size=config.size, margin=self.margin, crop_mode=config.crop)
                if self.margin else None)
        strength = denoise.check(config.denoise, config.denoise_strength)
        prefilter = (functools.partial(denoise.denoise, method=config.denoise, strength=strength)
                     if config.denoise != "none" else None)
        self.decoded = pipeline.decode(config.data_dir, self.metadata, config.size, config.crop, margin=self.margin,
                                   view=view, prefilter=prefilter)
        denoised = f", denoised ({config.denoise} {strength:g})" if prefilter else ""
        kept = f" with {self.margin} px around for shifts and zooms" if self.margin else ""
        say(f"train: {len(self.metadata)} B-scans decoded{denoised} and cropped to {config.size} px "
            f"({config.crop}){kept} in {self.decoded.seconds:.1f} s")
        if self.augmentations:
            say(f"train: augmenting training batches: {', '.join(self.augmentations)} at strength "
                f"{config.augment_strength:g} ({_ranges_in_words(self.augmentations, config.augment_strength)})")
        say(f"train: weights: {self.weights.describe()}"
            + (f", trained on {self.weights.scaling} inputs ({scaling.SCALING_WORDS[self.weights.scaling]})"
               if self.weights.scaling else ""))
        say(f"train: input scaling: {self.scaling.describe()}")
        ratio = scaling.scaling_mismatch(self.scaling, self.weights.scaling)
        if ratio:
            say(f"train: warning: --preprocess={self.scaling.preprocess} feeds inputs whose range differs "
                f"{ratio:.0f}x from what these {self.weights.scaling} weights were trained on: transfer will be "
                "weak (--preprocess=auto matches them)")
        # Everything a run changes, as it was before the first: restored before each run.
        self._initial = [v.numpy() for v in self.model.variables]
        self._initial_optimizer = [v.numpy() for v in self.model.optimizer.variables]
        model, batch = self.model, config.validation_batch
        self._forward = tf.function(lambda x: model(x, training=False), input_signature=[
            tf.TensorSpec((batch, config.size, config.size, 1), tf.uint8)])
        self._ready = True

    def _reset(self, seed: int):
        keras.utils.set_random_seed(seed)
        for variable, value in zip(self.model.variables, self._initial):
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, self._initial_optimizer):
            variable.assign(value)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities of `images` through fixed-size (padded) batches."""
        out = [self._forward(batch).numpy()[:count] for batch, count in
               pipeline.padded_batches(images, self.config.validation_batch)]
        return np.concatenate(out).astype(np.float64)

    def _fit(self, config: Config, train_idx, val_idx, out: pathlib.Path) -> dict:
        say, model = self.say, self.model
        self._reset(config.seed)
        if self.augmentations:
            train_ds = augment.training_batches(self.decoded.images, self.decoded.labels, train_idx, config.batch,
                                                config.seed, config.size, self.margin, self.augmentations,
                                                config.augment_strength)
        else:
            train_ds = pipeline.training_batches(self.decoded, train_idx, config.batch, config.seed)
        # Validation never sees an augmentation: the views' central windows are the plain crops.
        val_images, val_labels = self.decoded.crops[val_idx], self.metadata.labels[val_idx]
        steps_per_epoch = len(train_idx) // config.batch  # MATLAB drops the last partial mini-batch.
        epochs = config.max_epochs
        if config.max_iterations and not config.early_stop:
            # The paper's fixed-iteration experiment: as many epochs as the iterations need.
            epochs = math.ceil(config.max_iterations / steps_per_epoch)
        checks = early_stop.check_steps(steps_per_epoch, config.checks_per_epoch)
        say(f"train: {len(train_idx)} training, {len(val_idx)} validation B-scans (majority class "
            f"{_majority(val_labels):.4f}); {steps_per_epoch} iterations per epoch, up to {epochs} epochs; "
            f"validation checks at iterations {', '.join(map(str, checks))} of each epoch")

        writer = tf.summary.create_file_writer(str(out))
        eval_seconds = [0.0]

        def predict():
            start = time.perf_counter()
            probabilities = self._predict(val_images)
            eval_seconds[0] += time.perf_counter() - start
            return probabilities

        def on_evaluation(e: early_stop.Evaluation):
            if not np.isfinite(e.val_loss):
                raise RunFailed(f"validation loss is {e.val_loss} at iteration {e.iteration}")
            tensorboard.log_check(writer, e)
            line = check_line(e, stop, steps_per_epoch, config.patience if config.early_stop else None)
            # On a terminal the progress bar owns the line: clear it, print, and let the bar redraw below.
            say(("\r\x1b[2K" if self.progress else "") + line)

        stop = early_stop.HalfEpochEarlyStop(
            predict, val_labels, steps_per_epoch, config.checks_per_epoch, config.patience,
            early_stop=config.early_stop, max_iterations=config.max_iterations, eval_every=config.eval_every,
            on_evaluation=on_evaluation)
        step_logger = tensorboard.StepLogger(writer, lambda: stop.iteration)
        hparams = {**dataclasses.asdict(config), "image_size": config.size}
        tensorboard.log_start(writer, hparams, f"{config.design}/{config.arch}/batch{config.batch}/fold{config.fold}",
                         val_images)

        fit_start = time.perf_counter()
        try:
            model.fit(train_ds, epochs=epochs, verbose=1 if self.progress else 0, shuffle=False,
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
        _write_predictions(out / runs.PREDICTIONS, self.metadata, val_idx, best.p_fluid)
        if config.save_model:
            _save_model(model, out / runs.BEST_MODEL)
        tensorboard.log_end(writer, best, val_labels)
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


def check_line(e: early_stop.Evaluation, stop: early_stop.HalfEpochEarlyStop, steps_per_epoch: int,
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


def _ranges_in_words(augmentations, strength) -> str:
    r = augment.ranges(strength)
    words = {"flip": f"mirror with probability {r['flip_probability']:g}",
             "shift": f"shift up to {r['shift_fraction']:g} of the side", "scale": "zoom {:g}-{:g}".format(*r["zoom"]),
             "intensity": "gain {:g}-{:g}, gamma {:.3g}-{:.3g}".format(*r["gain"], *r["gamma"]),
             "speckle": f"speckle sd {r['speckle_std']:g}"}
    return "; ".join(words[a] for a in augmentations)


def _majority(labels) -> float:
    share = float(np.mean(np.asarray(labels) != 0))
    return max(share, 1.0 - share)


def _strategy(name):
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise InputError(f"--strategy={name}: choose default or mirrored")


def _write_predictions(path, metadata, val_idx, p_fluid):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(runs.PREDICTION_COLUMNS)
        for i, p in zip(val_idx, p_fluid):
            writer.writerow([metadata.volume_ids[i], int(metadata.slices[i]), int(metadata.labels[i]),
                             repr(float(p)), metadata.sources[i]])
    tmp.replace(path)


def _save_model(model, path):
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    tmp.replace(path)
