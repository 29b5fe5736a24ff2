"""The run-folder contract: where a run's results live, what "done" means, and LOGDIR/results.jsonl.

A run is one (design, arch, batch, fold); its folder `LOGDIR/{design}/{arch}/batch{batch}/fold{fold}/` holds
`result.json` (written last, atomically: its presence means the run finished), `predictions.csv`,
`flags.txt`, `best.keras` (unless not saved) and TensorBoard events. Its console output goes to
`LOGDIR/logs/{design}/{arch}/batch{batch}/fold{fold}.log`, outside the folder, which a restart empties.

A finished run is *done* for a plan only when its recorded configuration matches the plan's (`stale_reason`):
the same data (its manifest's identity and size), folds, input, weights, scaling and protocol.

`LOGDIR/results.jsonl` holds one line per finished run (the `result.json` contents) so that reports need not
walk the folders. Lines are appended with one `write` on an `O_APPEND` descriptor while holding an exclusive
`flock` on `LOGDIR/results.jsonl.lock`: concurrent writers never interleave or duplicate lines. A torn last
line (the machine died mid-write) is ignored with a warning and repaired by the next append.

This module imports neither TensorFlow nor Keras.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import sys
from typing import Iterable, List, Optional

from octtl import outputs, protocol

from octtl.results import variants

RESULT = "result.json"
PREDICTIONS = "predictions.csv"  # the best model's validation predictions
PREDICTION_COLUMNS = ("volume_id", "slice", "label", "p_fluid", "source")
FLAGS_FILE = "flags.txt"
BEST_MODEL = "best.keras"
RESULTS = "results.jsonl"
LOCK = "results.jsonl.lock"
LOGS = "logs"
MAX_BATCH = "max_batch.json"
# What a result records of its configuration; a plan's run is done only where every one of these agrees.
CONFIG_KEYS = ("data", "folds", "image_size", "crop", "weights", "preprocess", "lr", "momentum", "max_epochs",
               "checks_per_epoch", "patience", "early_stop", "max_iterations", "eval_every", "seed",
               "group_by_volume", "mixed_precision", "augment", "augment_strength", "denoise", "denoise_strength")


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
    save_model: bool = True
    augment: str = ""  # comma list of octtl.data.augment.AUGMENTATIONS; the paper used none
    augment_strength: float = 1.0
    denoise: str = "none"  # octtl.data.denoise.METHODS
    denoise_strength: Optional[float] = None  # None: the method's default
    overwrite: bool = False

    @property
    def size(self) -> int:
        """The input side the run uses: image_size when set, else the network's native one."""
        return protocol.native_size(self.arch, self.image_size)

    @property
    def variant(self) -> dict:
        """The run's lr, augmentation and denoising in their one spelling (octtl.results.variants.normalize)."""
        return variants.normalize(self.lr, [a for a in self.augment.split(",") if a.strip() and a != "none"],
                                  self.augment_strength, self.denoise, self.denoise_strength)

    @property
    def variant_name(self) -> str:
        """The run folder's variant component, '' for the defaults."""
        return variants.variant_name(**self.variant) or ""

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
            "mixed_precision": config.mixed_precision, **_recorded(config.variant)}


def _recorded(variant: dict) -> dict:
    """A variant as result.json records it (lists, not tuples: JSON has no tuples)."""
    return {**variant, "augment": list(variant["augment"])}


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


@dataclasses.dataclass(frozen=True, order=True)
class Run:
    """One training run of the study: a network at a batch size on one fold of one design, in one variant.

    `variant` is octtl.results.variants' folder component ('' for the default lr, augmentation and denoising): it sits
    between the batch and the fold, so runs of the defaults keep their place.
    """

    design: str
    arch: str
    batch: int
    fold: int
    variant: str = ""

    def _parts(self) -> tuple:
        return (self.design, self.arch, f"batch{self.batch}", *([self.variant] if self.variant else []))

    def folder(self, logdir) -> pathlib.Path:
        """The run's folder: LOGDIR/{design}/{arch}/batch{batch}/[{variant}/]fold{fold}."""
        return pathlib.Path(logdir).joinpath(*self._parts(), f"fold{self.fold}")

    def log(self, logdir) -> pathlib.Path:
        """Where the run's console output goes: outside its folder, which a restart empties."""
        return pathlib.Path(logdir).joinpath(LOGS, *self._parts(), f"fold{self.fold}.log")

    def __str__(self):
        variant = f" {self.variant}" if self.variant else ""
        return f"{self.design} {self.arch} batch {self.batch}{variant} fold {self.fold}"


def run_of(result: dict) -> Run:
    """The run a result belongs to."""
    variant = variants.variant_name(**variants.variant_of(result)) or ""
    return Run(result["design"], result["arch"], int(result["batch"]), int(result["fold"]), variant)


def read_result(path) -> Optional[dict]:
    """A result.json, or None when it is absent (or, written by hand, unreadable)."""
    try:
        result = json.loads(pathlib.Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return result if isinstance(result, dict) else None


def result_of(logdir, run: Run) -> Optional[dict]:
    """The result of `run` under `logdir`, or None when it has not finished."""
    return read_result(run.folder(logdir) / RESULT)


def write_result(folder, result: dict):
    """Writes result.json atomically: the run is finished the instant it appears."""
    outputs.write_json(pathlib.Path(folder) / RESULT, result)


def stale_reason(result: dict, expected: dict) -> Optional[str]:
    """Why a finished run's result does not answer a plan's configuration `expected`; None when it does.

    Args:
        result: The run's result.json.
        expected: The plan's values of CONFIG_KEYS (a key the plan leaves out is not compared).
    """
    differences = []
    for key in CONFIG_KEYS:
        if key not in expected:
            continue
        if key not in result:
            differences.append(f"{key} not recorded")
        elif not _same(result[key], expected[key]):
            differences.append(f"{key} {_show(result[key])} (plan: {_show(expected[key])})")
    return ", ".join(differences) or None


def _same(recorded, planned) -> bool:
    if isinstance(planned, float) or isinstance(recorded, float):
        try:
            return float(recorded) == float(planned)
        except (TypeError, ValueError):
            return False
    return recorded == planned


def _show(value) -> str:
    if isinstance(value, dict):
        return "/".join(str(v)[:12] for v in value.values())
    return json.dumps(value) if not isinstance(value, str) else value


def collect(logdir) -> List[dict]:
    """Every finished run's result.json under `logdir`, in run order."""
    results = []
    root = pathlib.Path(logdir)
    for path in [*root.glob(f"*/*/batch*/fold*/{RESULT}"), *root.glob(f"*/*/batch*/*/fold*/{RESULT}")]:
        result = read_result(path)
        if result is not None and {"design", "arch", "batch", "fold"} <= set(result):
            results.append(result)
    return sorted(results, key=run_of)


def _line(result: dict) -> bytes:
    return (json.dumps(result, sort_keys=True, allow_nan=False) + "\n").encode()


@contextlib.contextmanager
def _locked(logdir):
    """Exclusive lock on LOGDIR/results.jsonl.lock, shared by every process writing to this logdir."""
    pathlib.Path(logdir).mkdir(parents=True, exist_ok=True)
    fd = os.open(pathlib.Path(logdir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_results(path, warn=lambda line: print(line, file=sys.stderr)) -> List[dict]:
    """The lines of a results.jsonl, the last line of each run winning (a redone run appends a new line).

    A torn last line (no newline: the writer died mid-write) is skipped with one warning; the run folders
    still hold that result.

    Raises:
        ValueError: a complete line that is not a result, naming the line.
    """
    latest = {}
    text = pathlib.Path(path).read_bytes().decode(errors="replace")
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            result = json.loads(line)
            latest[run_of(result)] = result
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            if number == len(lines):  # no newline after it: torn by a crash
                warn(f"warning: {path}:{number}: ignoring a torn last line (a writer died mid-write); "
                     "the run folders keep that result")
                continue
            raise ValueError(f"{path}:{number}: not a result line ({e})") from None
    return [latest[run] for run in sorted(latest)]


def record(logdir, results: Iterable[dict]) -> int:
    """Appends the results not yet in LOGDIR/results.jsonl (one atomic write per line); returns how many.

    A torn last line is cut off first, so the file stays one result per line.
    """
    path = pathlib.Path(logdir) / RESULTS
    with _locked(logdir):
        present = {}
        if path.exists():
            _cut_torn_tail(path)
            for result in read_results(path):
                present[run_of(result)] = _line(result)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        added = 0
        try:
            for result in results:
                line = _line(result)
                if present.get(run_of(result)) == line:
                    continue
                # One write of a whole line on an O_APPEND descriptor: readers never see half a line.
                os.write(fd, line)
                present[run_of(result)] = line
                added += 1
        finally:
            os.close(fd)
    return added


def _cut_torn_tail(path: pathlib.Path):
    """Truncates a last line that has no newline (called under the lock)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(keep)


def rebuild(logdir) -> int:
    """Rewrites LOGDIR/results.jsonl from the run folders (the truth); returns the number of lines."""
    results = collect(logdir)
    path = pathlib.Path(logdir) / RESULTS
    with _locked(logdir):
        outputs.write_text(path, b"".join(_line(r) for r in results).decode())
    return len(results)


def summary_line(result: dict) -> str:
    """A finished run in one line: metrics beside the majority-class rate, weights, scaling and folder."""
    head = (f"{result['arch']} {result['design']} batch {result['batch']} fold {result['fold']}"
            if {"arch", "design", "batch", "fold"} <= set(result) else "run")
    where = f" ({result['run_dir']})" if result.get("run_dir") else ""
    if result.get("status") != "ok":
        return f"{head}: FAILED: {result.get('error')}{where}"
    auc = "n/a" if result.get("best_auc") is None else f"{result['best_auc']:.4f}"
    majority = f" (majority class {result['majority_rate']:.4f})" if result.get("majority_rate") else ""
    weights = {"imagenet": "ImageNet weights", "none": "no pretrained weights"}.get(
        result.get("weights"), f"weights {result.get('weights')}")
    scaling = f", {result['preprocess']} scaling" if result.get("preprocess") else ""
    return (f"{head}: best accuracy {result['best_accuracy']:.4f}{majority}, AUC {auc}, "
            f"iterations to best {result['iterations_to_best']} of {result['iterations']}; {weights}{scaling}"
            f"{where}" + (" (already done)" if result.get("skipped") else ""))
