"""Trains a network with the paper's protocol (section II-A): one run, or many runs in one session.

SGD with momentum on cross-entropy, training data reshuffled every epoch, validation loss checked
`checks_per_epoch` times per epoch with the half-epoch early stop, and the model of highest validation
accuracy kept with the iteration it was reached at. A run's outputs follow the run-folder contract
(octtl.runs): result.json last and atomically, predictions.csv, flags.txt, best.keras, TensorBoard events.

A `Session` decodes the records once into memory, builds and compiles the network once, and then trains any
number of (design, fold) runs on it. Before each run it restores the initial weights (Dropout's seed state
included), the optimizer's slots and iteration counter, and reseeds every generator, so each run gives exactly
what a fresh process of the same code gives; batch shapes stay fixed (validation batches are padded), so
nothing is traced twice. `train` is a session of one run. A run is three steps: prepare the session (once),
fit (octtl.training.fitting), write the outputs.
"""

import contextlib
import dataclasses
import functools
import math
import shutil
import sys
import time
from typing import Callable, Optional

import keras
import numpy as np

from octtl import outputs, protocol, runs
from octtl.data import augment_numpy, denoise, folds, pipeline, records
from octtl.errors import InputError, WeightsError
from octtl.nets import devices, head_init, models, pretrained, registry, scaling
from octtl.training import clinical, events, fitting, frozen, tasks
from octtl.training import config as config_lib  # `config` is every function's run settings here
from octtl.training.config import STRATEGIES, Config, flags_text, planned


def check_settings(config: Config):
    """Fails, naming the flag, on settings that cannot run, before any data is read or anything is printed."""
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
    if config.strategy not in STRATEGIES:
        raise InputError(f"--strategy={config.strategy}: choose from {', '.join(STRATEGIES)}")
    if config.strategy != "default" and devices.backend() != "tensorflow":
        devices.strategy(config.strategy)  # refused in one line: MirroredStrategy is TensorFlow's
    minimum = registry.get(config.arch).min_input_size
    if config.size < minimum:
        raise InputError(f"--image_size={config.size}: {config.arch} needs at least {minimum} px")
    augment_numpy.parse(config.augment)
    augment_numpy.check_strength(config.augment_strength)
    denoise.check(config.denoise, config.denoise_strength)
    config_lib.check_curve_point(config)
    config_lib.check_trainable(config)
    config_lib.check_task(config)
    config_lib.check_design(config)
    clinical.check_target(config.target_sensitivity)


def validate(config: Config, metadata: records.Metadata):
    """Fails early, naming the flag or the data, on settings that cannot run on these data."""
    check_settings(config)
    if len(metadata) == 0:
        raise InputError(f"{config.data_dir}: no examples")
    if len(np.unique(metadata.labels)) < 2:
        raise InputError(f"{config.data_dir}: every B-scan has label {int(metadata.labels[0])}; "
                         "a classifier needs both classes")
    if config.design == protocol.VENDOR:
        # Two vendors or more, every one known, and each one's validation fold drawable: refused before decoding.
        for fold in range(len(folds.vendor_names(metadata.vendors))):
            splits(config, metadata, protocol.VENDOR, fold)


def splits(config: Config, metadata: records.Metadata, design: str, fold: int, strata=None) -> folds.Split:
    """One fold of one design as the config's folds, grouping and test fold make it (octtl.data.folds.splits).

    Args:
        strata: What the folds are stratified on (octtl.training.tasks.Task.strata); default the labels.
    """
    groups = metadata.volume_ids if config.group_by_volume else None
    strata = metadata.labels if strata is None else strata
    try:
        if design == protocol.VENDOR:  # each vendor in turn tests; its own refusals are InputErrors naming the flag
            return folds.vendor_splits(strata, metadata.vendors, fold, config.folds, config.seed, groups)
        return folds.splits(strata, design, fold, config.folds, config.seed, groups, test=config.held_out)
    except InputError:
        raise
    except ValueError as e:
        # The vendor design validates on one of --folds grouped folds of the training vendors' volumes.
        where = " (the vendor design's validation fold)" if design == protocol.VENDOR else ""
        raise InputError(f"{config.data_dir}: {e}{where}; use fewer --folds") from None


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

    A finished run whose configuration differs (octtl.runs.stale_reason) is refused in one line, unless
    config.overwrite replaces it.
    """
    return Session(config, say=say, progress=progress, refuse_stale=True).run(config.design, fold)


class Session:
    """One network at one batch size on one dataset: decoded once, built and compiled once, reset per run.

    Args:
        config: The settings every run of the session shares (its `design` and `fold` are ignored).
        say: Where the console lines go.
        progress: Keras' progress bar during training; default: only when stdout is a terminal.
        redo_stale: Train again a finished run whose configuration differs; else leave it and say so.
        refuse_stale: Refuse such a run instead (InputError naming its folder and what differs): octtl.train, where
            a finished run is replaced only with --overwrite.
        lock: Hold the run's lock (octtl.runs.Run.lock) while training it, refusing a run another process trains;
            off where the caller holds it (the sweep's workers).
        cache_features: With a frozen backbone (--trainable=head, two_phase), train the head on the backbone's
            outputs computed once (octtl.training.frozen); default: when there is no augmentation and they fit in
            memory. False runs the frozen backbone at every step.
    """

    def __init__(self, config: Config, say: Callable[[str], None] = print, progress: Optional[bool] = None,
                 redo_stale: bool = True, refuse_stale: bool = False, lock: bool = True,
                 cache_features: Optional[bool] = None):
        check_settings(config)
        self.config, self.say, self.redo_stale = config, say, redo_stale
        self.cache_features = cache_features
        self.refuse_stale, self.lock = refuse_stale, lock
        self.progress = sys.stdout.isatty() if progress is None else progress
        self._identity = None
        self._ready = False
        self.frozen = None

    @property
    def identity(self) -> dict:
        """The dataset's identity (manifest hash and size), recorded in every result."""
        if self._identity is None:
            self._identity = records.identity(self.config.data_dir)
        return self._identity

    def finished(self, design: str, fold: int, **per_run) -> Optional[dict]:
        """The run's result when it is done for this session's configuration; None when it must be trained.

        Touches neither weights nor records' images. A stale result is reported in one line; with
        `redo_stale` off it is returned (marked `stale`) rather than trained again.

        Args:
            per_run: A learning-curve point's settings (octtl.runs.PER_RUN), where it is not the session's.
        """
        config = dataclasses.replace(self.config, design=design, fold=fold, **per_run)
        run = runs.Run(design, config.arch, config.batch, fold, config.variant_name)
        previous = runs.result_of(self.config.logdir, run)
        if previous is None or self.config.overwrite:
            return None
        reason = runs.stale_reason(previous, planned(config, self.identity, previous))
        if reason is None:
            return {**previous, "skipped": True, "run_dir": str(run.folder(self.config.logdir))}
        if self.refuse_stale:
            raise InputError(f"{run.folder(self.config.logdir)}: a finished run of another configuration ({reason}); "
                             "--overwrite replaces it, another --logdir keeps both")
        if self.redo_stale:
            self.say(f"train: {run.folder(self.config.logdir)}: stale ({reason}); training it again")
            return None
        self.say(f"train: {run.folder(self.config.logdir)}: stale ({reason}); left as it is (--overwrite redoes it)")
        return {**previous, "stale": reason, "run_dir": str(run.folder(self.config.logdir))}

    def run(self, design: str, fold: int, **per_run) -> dict:
        """Trains one (design, fold) run, or reads it back when it is done; returns its result.

        Everything the run needs (data, folds, weights, network) is checked before its folder is created, so a
        refusal leaves nothing behind.

        Args:
            per_run: A learning-curve point's settings (octtl.runs.PER_RUN: train_volumes, repeat), where the
                run's are not the session's: the session's decoded B-scans and network serve every point.
        """
        unknown = set(per_run) - set(runs.PER_RUN)
        if unknown:
            raise ValueError(f"a session's runs differ only by {runs.PER_RUN}, not {sorted(unknown)}")
        done = self.finished(design, fold, **per_run)
        if done is not None:
            return done
        outputs.check_target(self.config.logdir, "--logdir", overwrite=True, folder=True)
        config = dataclasses.replace(self.config, design=design, fold=fold, **per_run)
        config_lib.check_curve_point(config)
        config_lib.check_design(config)
        run = runs.Run(design, config.arch, config.batch, fold, config.variant_name)
        out = run.folder(config.logdir)
        self.say(f"train: {run} -> {out}")
        self.prepare()
        split = self._split(config, design, fold)
        point = self._curve_point(config, split, fold)
        if not self.lock:
            return self._train(config, out, split, point)
        with outputs.exclusive(run.lock(config.logdir)) as mine:
            if not mine:
                raise InputError(f"{out}: another octtl process is training this run (it holds {run.lock(config.logdir)});"
                                 " wait for it, or use another --logdir")
            done = self.finished(design, fold, **per_run)  # that process may have finished it a moment ago
            return done if done is not None else self._train(config, out, split, point)

    def _train(self, config: Config, out, split: folds.Split, point: fitting.Schedule) -> dict:
        """Trains one run into its folder `out`; result.json is written last, so an unfinished run has none.

        Raises:
            InputError: The run folder cannot be written (read-only, a full disk): nothing half-written is left
                there under a name octtl reads, and the run starts again when the command is run again.
        """
        try:
            used = self._start_folder(config, out)
            started = time.time()
            result = {**self._recorded(used, split), **point.record()}
            self._reset(config.seed)
            with contextlib.closing(events.Writer(out)) as writer:
                try:
                    fitted = fitting.fit(self, used, point, split.validation, writer, self.say, self.progress)
                    result.update(fitting.write_outputs(self, used, fitted, split, out, writer), status="ok")
                except fitting.RunFailed as e:
                    result.update(status="failed", error=str(e))
            result["wall_seconds"] = time.time() - started
            runs.write_result(out, result)
        except OSError as e:
            raise InputError(f"--logdir={config.logdir}: cannot write {out} ({e.strerror or e}); the run did not "
                             "finish and starts again when the command is run again") from None
        return {**result, "run_dir": str(out)}

    def design_folds(self, design: str) -> int:
        """How many folds `design` has on these records: --folds, or the vendor design's number of vendors."""
        if design != protocol.VENDOR:
            return self.config.folds
        return len(folds.vendor_names(records.read_metadata(self.config.data_dir).vendors))

    def _split(self, config: Config, design: str, fold: int) -> folds.Split:
        """The run's training, validation and test indices, refused in one line where they cannot train."""
        split = splits(config, self.metadata, design, fold, self.strata)
        train_idx, val_idx = split.train, split.validation
        if config.batch > len(train_idx):
            raise InputError(f"--batch={config.batch}: larger than the training set of fold {fold} "
                             f"({len(train_idx)} B-scans, design {design})")
        if not self.task.types and len(np.unique(self.metadata.labels[train_idx])) < 2:
            raise InputError(f"{config.data_dir}: the training set of fold {fold} ({design}) holds one class; "
                             "use fewer --folds or another --seed")
        for name, indices in (("validation", val_idx), ("test", split.test)):
            if len(indices) and len(np.unique(self.metadata.labels[indices])) < 2:
                self.say(f"train: note: the {name} set of fold {fold} holds one class: its AUC is undefined")
        return split

    def _curve_point(self, config: Config, split: folds.Split, fold: int) -> fitting.Schedule:
        """What the run trains on and for how long: all of the fold's training data, or a learning-curve point's
        volumes for the iterations the whole training folds get (the same number of updates at every N)."""
        if config.volumes is None:
            return fitting.Schedule.whole(config, split.train)
        ids = folds.training_volumes(split.train, self.metadata.volume_ids, self.metadata.labels, config.volumes,
                                     config.seed, config.repeat, fold)
        subset = folds.subset_indices(split.train, self.metadata.volume_ids, ids)
        return fitting.Schedule.point(config, subset, len(split.train), sorted(map(str, ids)))

    def _start_folder(self, config: Config, out) -> Config:
        """An empty run folder with flags.txt; returns the settings as used (weights, scaling and size resolved)."""
        if out.exists():
            # No result.json (or a stale one): its events and checkpoints would mix with the new ones.
            shutil.rmtree(out)
        try:
            out.mkdir(parents=True)
        except OSError as e:
            raise InputError(f"--logdir={config.logdir}: cannot create {out} ({e.strerror or e})") from None
        events.write_hparams_config(config.logdir)
        used = dataclasses.replace(config, weights=self.weights.requested, preprocess=self.scaling.preprocess,
                                   image_size=config.size, overwrite=False, weights_fallback=None)
        outputs.write_text(out / runs.FLAGS_FILE, flags_text(used))
        return used

    def _recorded(self, used: Config, split: folds.Split) -> dict:
        """What result.json says of the run before it trains: its configuration, data, folds and sizes."""
        return {
            "arch": used.arch, "batch": used.batch, "design": used.design, "fold": used.fold,
            **planned(used, self.identity, {"weights_scaling": self.weights.scaling}),
            "weights_file": self.weights.path, "weights_scaling": self.weights.scaling,
            "train_size": int(len(split.train)), "val_size": int(len(split.validation)),
            "test_size": int(len(split.test)), "train_folds": split.train_folds,
            "train_volume_count": len(set(self.metadata.volume_ids[split.train])),
            "val_folds": split.validation_folds, "test_folds": split.test_folds,
            # The vendor design: which vendor tested, which trained, and its folds (one per vendor).
            **({"test_vendor": split.test_vendor, "train_vendors": sorted(set(self.metadata.vendors[split.train])),
                "design_folds": len(folds.vendor_names(self.metadata.vendors))} if split.test_vendor else {}),
            "majority_rate": self.task.majority(self.targets[split.validation]),
            "task": self.task.name,
            "data_dir": str(used.data_dir),
            "decode_seconds": self.decoded.seconds,  # once per session: denoising's cost is here, not per epoch
            # How the data was labelled, so predict labels new reference volumes alike after the data is gone.
            "fluid_labels": self.manifest.get("fluid_labels"),
            "min_fluid_voxels": self.manifest.get("min_fluid_voxels"),
            # Which classes its labels are (or its outputs, for fluid types), so predict names them and refuses
            # records of other classes.
            "classes": list(self.task.classes),
            # What trains (--trainable): the head's parameters alone with a frozen backbone, and whether it trained
            # on the backbone's outputs computed once (their seconds, once per session like decode_seconds).
            "trainable_params": self._trainable_params(),
            **({"feature_cache": self.frozen.cached, "feature_seconds": self.frozen.seconds}
               if self.frozen is not None else {}),
        }

    def _trainable_params(self) -> int:
        model = self.model if self.frozen is None else self.frozen.head
        return int(sum(np.prod(v.shape) for v in model.trainable_variables))

    def prepare(self):
        """Reads, checks and decodes the data, resolves the weights and builds the network, once per session."""
        if self._ready:
            return
        config = self.config
        if config.test_fold == "auto" and not config.held_out:
            self.say(f"train: --test_fold=auto: {config.folds} folds leave none to hold out; the checkpoint is "
                     "chosen and scored on the validation fold (at least 3 folds give a test fold)")
        self.metadata = records.read_metadata(config.data_dir)
        self.manifest = records.read_manifest(config.data_dir)
        validate(config, self.metadata)
        self.identity  # noqa: B018  (a missing or unreadable manifest fails here, before any work)
        self.task = tasks.resolve(config.task, self.manifest, self.metadata, config.data_dir)
        self.targets = self.task.targets(self.metadata, self.manifest)
        self.strata = self.task.strata(self.metadata, self.targets)
        self.weights = resolve_weights(config, self.say)
        self.scaling = scaling.resolve_preprocess(config.preprocess, self.weights, config.arch)
        self.model = build_model(config, self.weights, self.scaling, self.task)
        self.augmentations = augment_numpy.parse(config.augment)
        self.margin = augment_numpy.margin(config.size, self.augmentations, config.augment_strength)
        self.decoded = decode(config, self.metadata, self.margin, self.say)
        self._describe()
        self.frozen = frozen.for_session(self, compile_model) if config.trainable != "all" else None
        # Everything a run changes, as it was before the first: restored before each run.
        self._initial = [v.numpy() for v in self.model.variables]
        self._optimizers = [self.model.optimizer] + ([self.frozen.trainer.optimizer] if self.frozen else [])
        self._initial_optimizer = [[v.numpy() for v in o.variables] for o in self._optimizers]
        self._forward = devices.forward(self.model, config.validation_batch, (config.size, config.size, 1))
        self._ready = True

    def _describe(self):
        """The session's augmentation, weights and input scaling in words, with a warning where they clash."""
        config, say = self.config, self.say
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

    def _reset(self, seed: int):
        keras.utils.set_random_seed(seed)
        for variable, value in zip(self.model.variables, self._initial):
            variable.assign(value)
        for optimizer, values in zip(self._optimizers, self._initial_optimizer):
            for variable, value in zip(optimizer.variables, values):
                variable.assign(value)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities of `images` through fixed-size (padded) batches."""
        out = [np.asarray(self._forward(batch))[:count] for batch, count in
               pipeline.padded_batches(images, self.config.validation_batch)]
        return np.concatenate(out).astype(np.float64)


def build_model(config: Config, weights: pretrained.Weights, input_scaling: scaling.InputScaling,
                task: tasks.Task):
    """The network with its head swapped for the task and weights loaded, compiled with the protocol's SGD."""
    keras.utils.set_random_seed(config.seed)
    with devices.strategy(config.strategy).scope():
        try:
            model = models.build(config.arch, num_classes=task.outputs, weights=weights, image_size=config.size,
                                 preprocess=input_scaling, activation=task.activation,
                                 linear_head=config.trainable != "all")
        except WeightsError as e:
            raise WeightsError(f"--weights={config.weights}: {e}") from None
        if models.HEAD in {layer.name for layer in model.layers}:
            # Drawn by NumPy from the run's seed, so the new head is the same on every backend.
            head_init.initialise_head(model, config.seed)
        # The whole network trains at --lr, or at two_phase's --finetune_lr (its first phase is frozen.Frozen's).
        compile_model(model, config, task, config.second_lr or config.lr)
    return model


def compile_model(model, config: Config, task: tasks.Task, lr: float):
    """Compiles `model` for the task with the protocol's SGD at `lr`, its optimizer built on what trains now."""
    with devices.strategy(config.strategy).scope():
        if task.types:
            loss, accuracy = keras.losses.BinaryCrossentropy(), keras.metrics.BinaryAccuracy(name="accuracy")
        else:
            loss = keras.losses.SparseCategoricalCrossentropy()
            accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=config.momentum),
                      loss=loss, metrics=[accuracy], jit_compile=devices.jit_compile(config.jit_compile))
        model.optimizer.build(model.trainable_variables)


def decode(config: Config, metadata: records.Metadata, margin: int, say: Callable[[str], None]):
    """Every B-scan decoded once, denoised where asked, cropped (with `margin` around for augmentation)."""
    view = (functools.partial(augment_numpy.view, size=config.size, margin=margin, crop_mode=config.crop)
            if margin else None)
    strength = denoise.check(config.denoise, config.denoise_strength)
    prefilter = (functools.partial(denoise.denoise, method=config.denoise, strength=strength)
                 if config.denoise != "none" else None)
    unread = records.unlisted_note(config.data_dir, records.read_manifest(config.data_dir))
    if unread:
        say(f"train: note: {unread}")
    decoded = pipeline.decode(config.data_dir, metadata, config.size, config.crop, margin=margin, view=view,
                              prefilter=prefilter)
    denoised = f", denoised ({config.denoise} {strength:g})" if prefilter else ""
    kept = f" with {margin} px around for shifts and zooms" if margin else ""
    say(f"train: {len(metadata)} B-scans decoded{denoised} and cropped to {config.size} px "
        f"({config.crop}){kept} in {decoded.seconds:.1f} s")
    return decoded


def _ranges_in_words(augmentations, strength) -> str:
    r = augment_numpy.ranges(strength)
    words = {"flip": f"mirror with probability {r['flip_probability']:g}",
             "shift": f"shift up to {r['shift_fraction']:g} of the side", "scale": "zoom {:g}-{:g}".format(*r["zoom"]),
             "intensity": "gain {:g}-{:g}, gamma {:.3g}-{:.3g}".format(*r["gain"], *r["gamma"]),
             "speckle": f"speckle sd {r['speckle_std']:g}"}
    return "; ".join(words[a] for a in augmentations)
