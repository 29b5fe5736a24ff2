"""The run-folder contract: where a run's results live, what "done" means, and LOGDIR/results.jsonl.

A run is one (design, arch, batch, fold); its folder `LOGDIR/{design}/{arch}/batch{batch}/fold{fold}/` holds
`result.json` (written last, atomically: its presence means the run finished), `predictions.csv`,
`flags.txt`, `best.keras` (unless not saved) and TensorBoard events. Its console output goes to
`LOGDIR/logs/{design}/{arch}/batch{batch}/fold{fold}.log`, outside the folder, which a restart empties.

A run of non-default --lr, --augment, --denoise, --trainable, --task or --train_volumes settings has a variant
folder between the batch and the fold, `batch16/lr0.0003-aug_flip+shift/fold0`; the component lists, in this fixed
order and joined by "-", only what differs from the defaults:
  lr<lr>                 the learning rate, e.g. lr0.0003
  aug_<a>+<b>            the augmentations in alphabetical order (aug_none when the defaults have some)
  augs<strength>         --augment_strength, when augmenting at other than the default strength
  dn_<method>            --denoise
  dns<strength>          --denoise_strength, when other than the method's default (octtl.data.denoise)
  train_<setting>        --trainable: train_head, train_two_phase
  types, vol<N>, rep<R>  --task=fluid_types; a learning-curve point's --train_volumes and --repeat
Numbers are written in plain decimals (no exponent, no trailing zeros); a denoising strength's whole part has
three digits (dns003, dns012, dns025.5), so that names sort by value: learning rates and augmentation strengths
below 10 and denoising strengths below 1000 do. Every setting has one name (`parse_variant` refuses any other
spelling), so one variant never gets two folders. Results record their settings in the one spelling
(octtl.training.config.normalize), so a result names its own folder (`run_of`).

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
import math
import pathlib
import re
import sys
from typing import Iterable, List, Mapping, Optional, Sequence

import numpy as np

from octtl import outputs, protocol
from octtl.errors import InputError

RESULT = "result.json"
PREDICTIONS = "predictions.csv"  # the best model's validation predictions
TEST_PREDICTIONS = "test_predictions.csv"  # the best model's predictions on the held-out test fold, if any
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
               "group_by_volume", "test_fold", "mixed_precision", "augment", "augment_strength", "denoise",
               "denoise_strength", "trainable", "head_lr", "finetune_lr", "task", "train_volumes", "repeat", "backend")
# A result written before a setting existed ran as this value of it: read so, a finished run is neither stale
# nor lost (a plan that asks for another value finds it stale, as any other difference).
LEGACY = {"test_fold": "none", "group_by_volume": False, "preprocess": "paper", "early_stop": True,
          "max_iterations": None, "eval_every": None, "mixed_precision": False, "augment": [],
          "augment_strength": 1.0, "denoise": "none", "denoise_strength": None, "trainable": "all", "head_lr": None,
          "finetune_lr": None, "task": "fluid", "train_volumes": "all", "repeat": 0, "backend": "tensorflow"}


# The settings a run has without --lr, --augment, --denoise, --trainable and --train_volumes; a denoising
# strength defaults to its method's.
VARIANT_DEFAULTS = {"lr": protocol.LR, "augment": (), "augment_strength": 1.0, "denoise": "none",
                    "trainable": "all", "task": "fluid", "train_volumes": "all", "repeat": 0}
VARIANT_SEPARATOR = "-"
# What a learning-curve point adds: runs of one session that differ only by these share the session's work.
PER_RUN = ("train_volumes", "repeat")
_NUMBER = r"(\d+(?:\.\d+)?)"
# (setting, pattern) in the order components are written.
_COMPONENTS = (("lr", re.compile(rf"lr{_NUMBER}")),
               ("augment", re.compile(r"aug_([a-z]+(?:\+[a-z]+)*)")),
               ("augment_strength", re.compile(rf"augs{_NUMBER}")),
               ("denoise", re.compile(r"dn_([a-z]+)")),
               ("denoise_strength", re.compile(rf"dns{_NUMBER}")),
               ("trainable", re.compile(r"train_([a-z_]+)")),
               ("task", re.compile(r"(types)")),  # --task=fluid_types: another problem, its own folder
               ("train_volumes", re.compile(r"vol([1-9]\d*)")),
               ("repeat", re.compile(r"rep(0|[1-9]\d*)")))
_WIDTH = {"lr": 1, "augment_strength": 1, "denoise_strength": 3}  # digits of the whole part


def variant_name(lr: float, augment: Sequence[str], augment_strength: float, denoise: str,
                 denoise_strength: Optional[float], trainable: str = "all", train_volumes="all", repeat: int = 0,
                 task: str = "fluid", defaults: Mapping = VARIANT_DEFAULTS) -> Optional[str]:
    """The folder component of a variant (`lr0.0003-aug_flip+shift`, `train_head-vol4-rep1`); None for the
    defaults, which have none.

    The settings are taken in their one spelling (octtl.training.config.normalize): a denoising strength that
    changes nothing is None there. A learning-curve point (train_volumes other than 'all') always names its
    repeat.

    Raises:
        ValueError: A number that is not finite and positive.
    """
    augment = tuple(sorted(set(augment)))
    parts = []
    if float(lr) != float(defaults["lr"]):
        parts.append("lr" + _number(float(lr), _WIDTH["lr"]))
    if augment != tuple(sorted(set(defaults["augment"]))):
        parts.append("aug_" + ("+".join(augment) or "none"))
    if augment and float(augment_strength) != float(defaults["augment_strength"]):
        parts.append("augs" + _number(float(augment_strength), _WIDTH["augment_strength"]))
    if denoise != defaults["denoise"]:
        parts.append("dn_" + denoise)
    if denoise != "none" and denoise_strength is not None:
        parts.append("dns" + _number(float(denoise_strength), _WIDTH["denoise_strength"]))
    if trainable != defaults.get("trainable", "all"):
        parts.append("train_" + trainable)
    if task == "fluid_types":
        parts.append("types")
    if str(train_volumes) != "all":
        parts += [f"vol{int(train_volumes)}", f"rep{int(repeat)}"]
    return VARIANT_SEPARATOR.join(parts) or None


def _number(value: float, width: int) -> str:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"variant settings must be finite and > 0, got {value}")
    whole, _, fraction = np.format_float_positional(value, trim="-").partition(".")
    return whole.zfill(width) + ("." + fraction if fraction else "")


def parse_variant(name: str, defaults: Mapping = VARIANT_DEFAULTS) -> dict:
    """The settings a variant folder name stands for; `variant_name`'s inverse.

    Names are checked for their form and their one spelling; whether an augmentation, a denoising method or a
    trainable setting exists is for their owners (octtl.data.augment, octtl.data.denoise, octtl.training.config)
    to say.

    Raises:
        InputError: A name that is not a variant's one spelling (one line naming it).
    """
    values = {}
    parts = name.split(VARIANT_SEPARATOR) if name else []
    position = 0
    for part in parts:
        for position in range(position, len(_COMPONENTS) + 1):
            if position == len(_COMPONENTS):
                raise InputError(f"{name}: not a variant folder name ({part!r} is not one of lr, aug_, augs, "
                                 "dn_, dns, train_, types, vol, rep, in that order)")
            key, pattern = _COMPONENTS[position]
            match = pattern.fullmatch(part)
            if match:
                values[key] = match.group(1)
                position += 1
                break
    if not values:
        raise InputError(f"{name!r}: not a variant folder name (empty)")
    augment = values.get("augment")
    settings = {
        "lr": float(values.get("lr", defaults["lr"])),
        "augment": (tuple(defaults["augment"]) if augment is None else
                    () if augment == "none" else tuple(sorted(augment.split("+")))),
        "augment_strength": float(values.get("augment_strength", defaults["augment_strength"])),
        "denoise": values.get("denoise", defaults["denoise"]),
        "denoise_strength": float(values["denoise_strength"]) if "denoise_strength" in values else None,
        "trainable": values.get("trainable", defaults.get("trainable", "all")),
        "task": "fluid_types" if "task" in values else "fluid",
        "train_volumes": int(values["train_volumes"]) if "train_volumes" in values else "all",
        "repeat": int(values.get("repeat", 0)),
    }
    if not settings["augment"]:
        settings["augment_strength"] = float(defaults["augment_strength"])
    try:
        canonical = variant_name(**settings, defaults=defaults)
    except ValueError as e:
        raise InputError(f"{name}: not a variant folder name ({e})") from None
    if canonical != name:
        written = "the defaults, which have no variant folder" if canonical is None else canonical
        raise InputError(f"{name}: not a variant folder name (these settings are written {written})")
    return settings


def variant_of(result: Mapping, defaults: Mapping = VARIANT_DEFAULTS) -> dict:
    """A result's variant settings; those a result does not record (older runs) are the defaults.

    Reads result.json's `lr`, `augment` (a list of names, or a comma string), `augment_strength`, `denoise`,
    `denoise_strength`, `trainable`, `train_volumes` and `repeat`, which a result records in their one spelling.
    """
    augment = result.get("augment", defaults["augment"]) or ()
    if isinstance(augment, str):
        augment = [a.strip() for a in augment.split(",") if a.strip() and a.strip() != "none"]
    augment = tuple(sorted(set(augment)))
    denoise = result.get("denoise", defaults["denoise"])
    volumes = result.get("train_volumes", "all")
    return {"lr": float(result.get("lr", defaults["lr"])), "augment": augment,
            "augment_strength": float(result.get("augment_strength", defaults["augment_strength"]))
            if augment else float(defaults["augment_strength"]),
            "denoise": denoise,
            "denoise_strength": None if denoise == "none" or result.get("denoise_strength") is None
            else float(result["denoise_strength"]),
            "trainable": result.get("trainable", "all"),
            "task": result.get("task", "fluid"),
            "train_volumes": "all" if str(volumes) == "all" else int(volumes),
            "repeat": int(result.get("repeat", 0)) if str(volumes) != "all" else 0}


def session_variant(name: str) -> str:
    """A variant's folder component without its learning-curve point (vol, rep): what one session shares."""
    return VARIANT_SEPARATOR.join(part for part in name.split(VARIANT_SEPARATOR)
                                  if part and not re.fullmatch(r"(vol|rep)\d+", part))


@dataclasses.dataclass(frozen=True, order=True)
class Run:
    """One training run of the study: a network at a batch size on one fold of one design, in one variant.

    `variant` is the variant's folder component (`variant_name`) ('' for the default lr, augmentation and denoising): it sits
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

    def lock(self, logdir) -> pathlib.Path:
        """The lock a process training the run holds (octtl.outputs.exclusive): beside its log."""
        return self.log(logdir).with_suffix(".lock")

    def log(self, logdir) -> pathlib.Path:
        """Where the run's console output goes: outside its folder, which a restart empties."""
        return pathlib.Path(logdir).joinpath(LOGS, *self._parts(), f"fold{self.fold}.log")

    def __str__(self):
        variant = f" {self.variant}" if self.variant else ""
        return f"{self.design} {self.arch} batch {self.batch}{variant} fold {self.fold}"


def run_of(result: dict) -> Run:
    """The run a result belongs to."""
    variant = variant_name(**variant_of(result)) or ""
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
        if key not in result and key not in LEGACY:
            differences.append(f"{key} not recorded")
            continue
        recorded = recorded_setting(result, key)
        if not _same(recorded, expected[key]):
            differences.append(f"{key} {_show(recorded)} (plan: {_show(expected[key])})")
    return ", ".join(differences) or None


def recorded_setting(result: dict, key: str):
    """A result's setting `key`, or, for a result written before the setting existed, how it ran (LEGACY)."""
    return result[key] if key in result else LEGACY.get(key)


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


def collect(logdir, unreadable: Optional[list] = None) -> List[dict]:
    """Every finished run's result.json under `logdir`, in run order.

    Args:
        unreadable: Where given, gets "<path>: <why>" for each result.json that is not a run's result (not valid
            JSON, not an object, or without design, arch, batch and fold), which is left out.
    """
    results = []
    root = pathlib.Path(logdir)
    for path in sorted([*root.glob(f"*/*/batch*/fold*/{RESULT}"), *root.glob(f"*/*/batch*/*/fold*/{RESULT}")]):
        try:
            result = json.loads(path.read_text())
            if not isinstance(result, dict) or not {"design", "arch", "batch", "fold"} <= set(result):
                raise ValueError("no design, arch, batch and fold")
            run_of(result)
            results.append(result)
        except FileNotFoundError:
            continue  # Gone since it was listed (a run restarting), or a dangling link: no result.
        except (OSError, UnicodeDecodeError, ValueError, TypeError) as e:  # InputError and JSONDecodeError included
            why = e.strerror if isinstance(e, OSError) else f"not valid JSON ({e})" if isinstance(
                e, json.JSONDecodeError) else f"not a run's result ({e})"
            if unreadable is not None:
                unreadable.append(f"{path}: {why}")
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
        InputError: a complete line that is not a result, naming the line.
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
            raise InputError(f"{path}:{number}: not a result line ({e})") from None
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
    head += f" (test vendor {result['test_vendor']})" if result.get("test_vendor") else ""
    where = f" ({result['run_dir']})" if result.get("run_dir") else ""
    if result.get("status") != "ok":
        return f"{head}: FAILED: {result.get('error')}{where}"
    auc = "n/a" if result.get("best_auc") is None else f"{result['best_auc']:.4f}"
    majority = f" (majority class {result['majority_rate']:.4f})" if result.get("majority_rate") else ""
    weights = {"imagenet": "ImageNet weights", "none": "no pretrained weights"}.get(
        result.get("weights"), f"weights {result.get('weights')}")
    scaling = f", {result['preprocess']} scaling" if result.get("preprocess") else ""
    tested = ""
    if result.get("test_accuracy") is not None:
        test_auc = "n/a" if result.get("test_auc") is None else f"{result['test_auc']:.4f}"
        tested = f"; held-out test fold: accuracy {result['test_accuracy']:.4f}, AUC {test_auc}"
    return (f"{head}: best accuracy {result['best_accuracy']:.4f}{majority}, AUC {auc}, "
            f"iterations to best {result['iterations_to_best']} of {result['iterations']}{tested}; "
            f"{weights}{scaling}{where}" + (" (already done)" if result.get("skipped") else ""))
