"""A training run's settings (`Config`) and what a finished run must record to count as done for them.

`Config` is the one list of a run's settings: its field names are octtl.train's flags (the command fills it
from them field by field), flags.txt writes it back as flags, and `planned` gives the values of
`octtl.runs.CONFIG_KEYS` a finished result must record to be "done" for it (`octtl.runs.stale_reason`).
Imports neither TensorFlow nor Keras.
"""

import dataclasses
import math
from typing import Mapping, Optional, Sequence

from octtl import console, protocol, runs
from octtl.errors import InputError
from octtl.data import denoise as denoising  # `denoise` is the setting's name here
from octtl.nets import registry


STRATEGIES = ("default", "mirrored")  # mirrored: data-parallel over every local GPU
# auto: a held-out test fold when there are at least 3 folds (octtl.data.folds.splits); none: the paper's split.
TEST_FOLDS = ("auto", "none")
# all: fine-tune every layer (the paper); head: the backbone frozen, only the new head trains (at --head_lr);
# two_phase: head until its early stop, then every layer at --finetune_lr (the keras-io transfer-learning recipe).
TRAINABLE = ("all", "head", "two_phase")
# fluid: the records' label (octtl.training.tasks); fluid_types: RETOUCH's three fluid types per B-scan.
TASKS = ("fluid", "fluid_types")


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
    group_by_volume: bool = True  # the paper's split is ungrouped (flags/paper_*.cfg say so)
    test_fold: str = "auto"  # TEST_FOLDS; the paper scores the checkpoint on the fold that chose it
    image_size: Optional[int] = None
    preprocess: str = "auto"
    crop: str = "center"
    eval_batch: Optional[int] = None
    mixed_precision: bool = False
    jit_compile: bool = False
    strategy: str = "default"  # STRATEGIES
    early_stop: bool = True
    max_iterations: Optional[int] = None
    eval_every: Optional[int] = None
    save_model: bool = True
    augment: str = ""  # comma list of octtl.data.augment_numpy.AUGMENTATIONS; the paper used none
    augment_strength: float = 1.0
    denoise: str = "none"  # octtl.data.denoise.METHODS
    denoise_strength: Optional[float] = None  # None: the method's default
    task: str = "fluid"  # octtl.training.tasks.TASKS: the records' classes, or RETOUCH's three fluid types
    trainable: str = "all"  # TRAINABLE
    head_lr: Optional[float] = None  # the head's rate on a frozen backbone (head, two_phase's first phase); None: 10 lr
    finetune_lr: Optional[float] = None  # two_phase's second phase; None: lr / 10
    train_volumes: str = "all"  # a learning-curve point: how many whole training volumes (patients) to keep
    repeat: int = 0  # which draw of those volumes
    # The sensitivity a recorded threshold must reach on validation (octtl.training.clinical); it changes what a
    # result reports, not how the run trains, so it is no part of runs.CONFIG_KEYS.
    target_sensitivity: float = 0.95
    overwrite: bool = False

    @property
    def size(self) -> int:
        """The input side the run uses: image_size when set, else the network's native one."""
        return registry.input_size(self.arch, self.image_size)

    @property
    def variant(self) -> dict:
        """The run's variant settings in their one spelling (`normalize`): what its folder is named after."""
        return normalize(self.lr, [a for a in self.augment.split(",") if a.strip() and a != "none"],
                         self.augment_strength, self.denoise, self.denoise_strength, self.trainable,
                         self.train_volumes, self.repeat, self.task)

    @property
    def volumes(self) -> Optional[int]:
        """--train_volumes as a number; None for all of the fold's training volumes."""
        return None if str(self.train_volumes) == "all" else int(self.train_volumes)

    @property
    def variant_name(self) -> str:
        """The run folder's variant component (octtl.runs.variant_name), '' for the defaults."""
        return runs.variant_name(**self.variant) or ""

    @property
    def head_rate(self) -> Optional[float]:
        """The new head's rate on a frozen backbone (--head_lr, default 10 lr); None when every layer trains."""
        if self.trainable == "all":
            return None
        return float(self.head_lr) if self.head_lr is not None else self.lr * 10

    @property
    def second_lr(self) -> Optional[float]:
        """two_phase's fine-tuning rate (--finetune_lr, default lr / 10); None for the other settings."""
        if self.trainable != "two_phase":
            return None
        return float(self.finetune_lr) if self.finetune_lr is not None else self.lr / 10

    @property
    def held_out(self) -> bool:
        """Whether the run keeps a test fold out of training and of the checkpoint's choice."""
        return self.design == protocol.VENDOR or (self.test_fold == "auto" and self.folds >= 3)

    @property
    def validation_batch(self) -> int:
        """The evaluation batch: eval_batch when set, else twice the training batch, at least 64."""
        return protocol.eval_batch(self.batch, self.eval_batch)


def planned(config: Config, identity: dict, result: dict) -> dict:
    """The configuration a finished `result` must record to count as done for `config` (runs.CONFIG_KEYS).

    Needs no weights: `auto` preprocessing follows what the result says it loaded, and a run that fell back
    to random weights under --weights_fallback=none is what that setting asks for.
    """
    weights = config.weights
    if config.weights == "imagenet" and config.weights_fallback == "none" and result.get("weights") == "none":
        weights = "none"
    preprocess = config.preprocess
    if preprocess == "auto":
        preprocess = "backbone" if result.get("weights_scaling") else "paper"
    return {"data": identity, "folds": config.folds, "image_size": config.size, "crop": config.crop,
            "weights": weights, "preprocess": preprocess, "lr": config.lr, "momentum": config.momentum,
            "max_epochs": config.max_epochs, "checks_per_epoch": config.checks_per_epoch,
            "patience": config.patience, "early_stop": config.early_stop, "max_iterations": config.max_iterations,
            "eval_every": config.eval_every, "seed": config.seed, "group_by_volume": config.group_by_volume,
            "test_fold": "auto" if config.held_out else "none", "mixed_precision": config.mixed_precision,
            # The Keras backend the process runs (KERAS_BACKEND): another backend's run is another run.
            "backend": console.backend(), "head_lr": config.head_rate, "finetune_lr": config.second_lr,
            **_recorded(config.variant)}


def _recorded(variant: dict) -> dict:
    """A variant as result.json records it (lists, not tuples: JSON has no tuples)."""
    return {**variant, "augment": list(variant["augment"])}


def check_task(config: Config):
    """Refuses, naming the flag, a task its settings cannot run (octtl.training.tasks)."""
    if config.task not in TASKS:
        raise InputError(f"--task={config.task}: choose from {', '.join(TASKS)}")
    if config.task == "fluid_types" and not config.group_by_volume:
        raise InputError("--task=fluid_types: needs --group_by_volume (RETOUCH scored fluid types per volume; "
                         "a volume's B-scans must stay on one side of every split)")


def check_trainable(config: Config):
    """Refuses, naming the flag, a trainable setting that does not exist or a fine-tuning rate that cannot train."""
    if config.trainable not in TRAINABLE:
        raise InputError(f"--trainable={config.trainable}: choose from {', '.join(TRAINABLE)}")
    for name in ("head_lr", "finetune_lr"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name}={value}: must be a finite number > 0")


def check_curve_point(config: Config):
    """Refuses, naming the flag, a learning-curve point that cannot be drawn (octtl.data.folds.training_volumes)."""
    if str(config.train_volumes) == "all":
        return
    if not str(config.train_volumes).isdigit() or int(config.train_volumes) < 1:
        raise InputError(f"--train_volumes={config.train_volumes}: all, or a whole number of volumes >= 1")
    if config.repeat < 0:
        raise InputError(f"--repeat={config.repeat}: must be >= 0")
    if config.design != "baseline":
        raise InputError(f"--train_volumes={config.train_volumes}: the {config.design} design trains on one fold "
                         "already; learning curves draw volumes from the baseline design's training folds")
    if not config.group_by_volume:
        raise InputError(f"--train_volumes={config.train_volumes}: needs --group_by_volume (a learning curve counts "
                         "whole volumes or patients, which grouped folds keep whole)")


def check_design(config: Config):
    """Refuses, naming the flag, what the vendor design cannot do: its test set is a vendor, its validation fold a
    grouped fold of the other vendors' volumes (octtl.data.folds.vendor_splits)."""
    if config.design != protocol.VENDOR:
        return
    if not config.group_by_volume:
        raise InputError("--design=vendor: needs --group_by_volume (its validation fold is a grouped fold of the "
                         "training vendors' volumes)")
    if config.test_fold == "none":
        raise InputError("--design=vendor --test_fold=none: the vendor design's test set is the vendor it leaves "
                         "out; it has no run without one")


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


def normalize(lr: float, augment: Sequence[str], augment_strength: float, denoise: str,
              denoise_strength: Optional[float], trainable: str = "all", train_volumes="all",
              repeat: int = 0, task: str = "fluid") -> dict:
    """The one spelling of a variant's settings: augmentations sorted, strengths that change nothing dropped.

    An augmentation strength without augmentations becomes the default one; a denoising strength equal to its
    method's default (octtl.data.denoise.DEFAULT_STRENGTH) or with no denoising becomes None. Results record
    their variant in this spelling, so octtl.runs names a finished run's folder from its result alone. A
    learning-curve point's volumes are a number ('all' otherwise, when the repeat means nothing and is 0).
    """
    augment = tuple(sorted(set(augment)))
    augment_strength = float(augment_strength) if augment else float(runs.VARIANT_DEFAULTS["augment_strength"])
    if denoise == "none" or denoise_strength is None:
        denoise_strength = None
    elif float(denoise_strength) == float(denoising.DEFAULT_STRENGTH.get(denoise, math.nan)):
        denoise_strength = None
    else:
        denoise_strength = float(denoise_strength)
    volumes = "all" if str(train_volumes) == "all" else int(train_volumes)
    return {"lr": float(lr), "augment": augment, "augment_strength": augment_strength,
            "denoise": denoise, "denoise_strength": denoise_strength, "trainable": trainable,
            "train_volumes": volumes, "repeat": int(repeat) if volumes != "all" else 0, "task": task}


def variant_name(lr: float, augment: Sequence[str], augment_strength: float, denoise: str,
                 denoise_strength: Optional[float], trainable: str = "all", train_volumes="all", repeat: int = 0,
                 task: str = "fluid", defaults: Mapping = runs.VARIANT_DEFAULTS) -> Optional[str]:
    """The variant folder component of settings as given (`normalize`d, then octtl.runs.variant_name)."""
    return runs.variant_name(**normalize(lr, augment, augment_strength, denoise, denoise_strength, trainable,
                                         train_volumes, repeat, task), defaults=defaults)


def parse_variant(name: str, defaults: Mapping = runs.VARIANT_DEFAULTS) -> dict:
    """The settings a variant folder name stands for, in their one spelling; `variant_name`'s inverse.

    Besides octtl.runs.parse_variant's form, the denoising method must exist and its strength be one it takes
    and not its default (which has no component). Augmentation names are checked for their form only.

    Raises:
        InputError: A name that is not a variant's one spelling (one line naming it).
    """
    settings = runs.parse_variant(name, defaults)
    if settings["trainable"] not in TRAINABLE:
        raise InputError(f"{name}: not a variant folder name (unknown trainable setting {settings['trainable']!r})")
    if settings["denoise"] not in denoising.METHODS:
        raise InputError(f"{name}: not a variant folder name (unknown denoising method {settings['denoise']!r})")
    try:
        denoising.check(settings["denoise"], settings["denoise_strength"])
    except InputError as e:
        raise InputError(f"{name}: not a variant folder name ({e})") from None
    if variant_name(**settings, defaults=defaults) != name:
        raise InputError(f"{name}: not a variant folder name (the method's default strength has no component)")
    return normalize(**settings)
