"""The paper's study as a plan: every run of the grid, what is done, and each task's share.

A run is one (design, arch, batch, fold) in one variant (octtl.runs). `build` turns the sweep's settings into a
`Plan`: the grid of runs in a fixed order (`grid`), without the runs whose batch exceeds their training set,
with each run's settings (`Plan.config`) and the test that its finished result answers them (`Plan.stale`).
`shard` gives each of N tasks every N-th run; `groups` gathers the runs one worker session trains
(octtl.study.runner); `status`, `describe` and `estimate_seconds` are the dry run. Imports neither TensorFlow
nor Keras.
"""

import dataclasses
import sys
from typing import Callable, Dict, List, Optional, Sequence

from octtl import console, protocol, runs
from octtl.data import augment_numpy, denoise
from octtl.data import folds as folds_lib
from octtl.errors import InputError
from octtl.nets import registry
from octtl.runs import Run
from octtl.training.config import TRAINABLE, Config, check_curve_point, check_design, planned


def auto_batches(largest: int, smallest: int = protocol.SMALLEST_BATCH) -> List[int]:
    """Powers of two from `smallest` up to `largest`; a network that fits less than `smallest` runs at `largest`."""
    if largest < 1:
        return []
    if largest < smallest:
        return [largest]
    batches = [smallest]
    while batches[-1] * 2 <= largest:
        batches.append(batches[-1] * 2)
    return batches


def grid(designs: Sequence[str], archs: Sequence[str], batches: Dict[str, Sequence[int]], folds,
         variants: Sequence[str] = ("",)) -> List[Run]:
    """Every run of the study, in a fixed order (design, then arch as given, batch, variant, fold).

    Args:
        folds: The folds of every design, or {design: its folds} (the vendor design has one per vendor).
        variants: The variants' folder names (octtl.results.variants.variant_name; '' for the defaults).
    """
    counts = folds if isinstance(folds, dict) else dict.fromkeys(designs, folds)
    return [Run(design, arch, batch, fold, variant)
            for design in designs for arch in archs for batch in batches[arch] for variant in variants
            for fold in range(counts[design])]


def shard(runs_: Sequence[Run], task_index: int, num_tasks: int) -> List[Run]:
    """Task `task_index`'s share of the runs: every num_tasks-th run.

    Striding (rather than contiguous blocks) gives every task a mix of networks and batch sizes, so tasks
    finish at about the same time; the shares of tasks 0..num_tasks-1 partition `runs_`.
    """
    if num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise ValueError(f"task_index must be in 0..num_tasks-1, got {task_index} of {num_tasks}")
    return list(runs_[task_index::num_tasks])


def groups(runs_: Sequence[Run]) -> Dict[tuple, List[Run]]:
    """The runs by (arch, batch, variant), in plan order: what one worker's session trains.

    A variant's learning rate, augmentation, denoising and trainable layers are settings of the session
    (denoising changes the decoded B-scans), so each has its own; the points of a learning curve (their volumes
    and repeat) are not: they share their session's decoded B-scans and network.
    """
    out: Dict[tuple, List[Run]] = {}
    for run in runs_:
        out.setdefault((run.arch, run.batch, runs.session_variant(run.variant)), []).append(run)
    return out


def smallest_train_sets(labels, designs: Sequence[str], folds: int, seed: int = 0, groups_=None,
                        test: bool = False) -> Dict[str, int]:
    """The smallest training set over the folds of each design (as octtl.train will split the data)."""
    return {design: min(len(folds_lib.splits(labels, design, fold, folds, seed, groups_, test).train)
                        for fold in range(folds)) for design in designs if design != protocol.VENDOR}


def vendor_folds(metadata, base: Config) -> tuple:
    """(folds, smallest training set) of the vendor design on these records: one fold per vendor."""
    count = len(folds_lib.vendor_names(metadata.vendors))
    groups_ = metadata.volume_ids if base.group_by_volume else None
    return count, min(len(folds_lib.vendor_splits(metadata.labels, metadata.vendors, fold, base.folds, base.seed,
                                                  groups_).train) for fold in range(count))


def runnable(runs_: Sequence[Run], smallest: Dict[str, int]):
    """(runs whose batch fits the design's training set, the others), as octtl.train refuses a larger batch."""
    keep = [run for run in runs_ if run.batch <= smallest[run.design]]
    return keep, [run for run in runs_ if run.batch > smallest[run.design]]


def largest_batches(archs: Sequence[str], table_i: Dict[str, int], image_sizes: Dict[str, int],
                    probe: dict) -> Dict[str, tuple]:
    """Each network's largest batch and where it came from: the probe when it measured this input size.

    Returns:
        {arch: (largest batch, 'probe' or 'Table I')}.
    """
    measured = probe.get("archs", {})
    out = {}
    for arch in archs:
        entry = measured.get(arch)
        if entry is not None and entry.get("image_size") == image_sizes[arch]:
            out[arch] = (int(entry["largest_batch"]), "probe")
        else:
            out[arch] = (table_i[arch], "Table I")
    return out


def estimate_seconds(finished: Sequence[dict], todo: Sequence[Run]) -> tuple:
    """Time the to-do runs should take, from finished runs of the same network only.

    Each run to do is timed by the mean wall time of finished runs of the same (design, arch, batch), else
    (arch, batch), else arch. Networks differ in cost by 100x, so a network with no finished run gets no
    estimate rather than another network's.

    Returns:
        (seconds for the runs that have an estimate, sorted names of networks without one).
    """
    times = [r for r in finished if isinstance(r.get("wall_seconds"), (int, float))]

    def mean_by(key):
        grouped = {}
        for r in times:
            grouped.setdefault(key(r), []).append(r["wall_seconds"])
        return {k: sum(v) / len(v) for k, v in grouped.items()}

    levels = [
        (mean_by(lambda r: (r["design"], r["arch"], int(r["batch"]))), lambda u: (u.design, u.arch, u.batch)),
        (mean_by(lambda r: (r["arch"], int(r["batch"]))), lambda u: (u.arch, u.batch)),
        (mean_by(lambda r: r["arch"]), lambda u: u.arch),
    ]
    total, unknown = 0.0, set()
    for run in todo:
        for means, key in levels:
            if key(run) in means:
                total += means[key(run)]
                break
        else:
            unknown.add(run.arch)
    return total, sorted(unknown)


def format_duration(seconds: float) -> str:
    """A duration in words: seconds below 90 s, minutes below 90 min, else hours."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status(logdir, runs_: Sequence[Run], stale: Callable[[Run, dict], Optional[str]]) -> Dict[Run, str]:
    """'done', 'failed', 'stale: <why>' or 'to do' for each run, from its folder alone.

    Args:
        stale: Why a planned run's finished result does not answer the plan (None when it does).
    """
    out = {}
    for run in runs_:
        result = runs.result_of(logdir, run)
        why = stale(run, result) if result is not None else None
        if result is None:
            out[run] = "to do"
        elif why:
            out[run] = f"stale: {why}"
        else:
            out[run] = "done" if result.get("status") == "ok" else "failed"
    return out


def describe(mine: Sequence[Run], logdir, all_runs: Sequence[Run], states: Dict[Run, str],
             task: str = "") -> List[str]:
    """The dry run's lines: runs planned, done, failed, stale, to do, and a time estimate."""
    lines = []
    by_net = {}
    for run in mine:
        by_net.setdefault((run.design, run.arch), []).append(run)
    for (design, arch), members in by_net.items():
        batches = sorted({m.batch for m in members})
        done = sum(states[m] in ("done", "failed") for m in members)
        stale = sum(states[m].startswith("stale") for m in members)
        lines.append(f"  {design:9s} {arch:18s} batches {','.join(map(str, batches)):14s} "
                     f"{done}/{len(members)} done" + (f", {stale} stale" if stale else ""))
    counts = {k: sum(1 for s in states.values() if s == k) for k in ("done", "failed", "to do")}
    stale_runs = [run for run in mine if states[run].startswith("stale")]
    head = f"plan{task}: {console.count(len(mine), 'run')}"
    if len(mine) != len(all_runs):
        head += f" (of {len(all_runs)} in the whole sweep)"
    lines.insert(0, f"{head}: {counts['done'] + counts['failed']} done ({counts['failed']} failed), "
                    f"{len(stale_runs)} stale, {counts['to do']} to do")
    for run in stale_runs[:10]:
        lines.append(f"  stale {run}: {states[run][len('stale: '):]} (--overwrite redoes it)")
    if len(stale_runs) > 10:
        lines.append(f"  ... and {len(stale_runs) - 10} more stale runs")
    todo = [run for run in mine if states[run] == "to do" or states[run].startswith("stale")]
    seconds, unknown = estimate_seconds(runs.collect(logdir), todo)
    if not todo:
        lines.append("estimate: nothing to do")
    else:
        known = len(todo) - sum(run.arch in unknown for run in todo)
        line = (f"estimate: {format_duration(seconds)} for {console.count(known, 'run')}, from finished runs of the same network"
                if known else "estimate: none yet")
        if unknown:
            line += f"; no finished run of {', '.join(unknown)} to time the rest"
        lines.append(line + " (plus a worker's start-up, about 10-60 s, per network x batch size)")
    return lines


def train_command(run: Run, data_dir, logdir, folds: int, passthrough: Sequence[str]) -> List[str]:
    """The `python -m octtl.train` command that trains `run` alone, as the sweep's worker does."""
    return [sys.executable, "-m", "octtl.train", *passthrough, f"--data_dir={data_dir}", f"--logdir={logdir}",
            f"--folds={folds}", f"--design={run.design}", f"--arch={run.arch}", f"--batch={run.batch}",
            f"--fold={run.fold}"]


def archs_from(names: Sequence[str]) -> List[str]:
    """--archs as registry names, in Table I order for 'all' and as given otherwise (each once)."""
    if list(names) == ["all"]:
        return list(registry.ARCHITECTURES)
    unknown = [n for n in names if n not in registry.ARCHITECTURES]
    if unknown or not names:
        raise InputError(f"--archs={','.join(names)}: unknown network(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose all or from {', '.join(registry.ARCHITECTURES)}")
    return list(dict.fromkeys(names))


def designs_from(names: Sequence[str]) -> List[str]:
    """The --designs names in order, each once."""
    unknown = [n for n in names if n not in protocol.DESIGNS]
    if unknown or not names:
        raise InputError(f"--designs={','.join(names)}: choose from {', '.join(protocol.DESIGNS)}")
    return list(dict.fromkeys(names))


def batches_from(values: Sequence[str], archs: Sequence[str], probe_path, image_size: Optional[int]) -> tuple:
    """{arch: batch sizes} and, for auto, a line saying where each network's largest batch came from.

    Args:
        values: --batches: ['auto'] (8, 16, ... up to each network's largest) or integers.
        probe_path: The largest-batch probe's table (octtl.study.batch_probe), read for auto.
        image_size: The sweep's input size (None: each network's own); a probe counts only at that size.
    """
    from octtl.study import batch_probe

    if list(values) != ["auto"]:
        try:
            batches = sorted({int(v) for v in values})
        except ValueError:
            raise InputError(f"--batches={','.join(values)}: auto or a list of integers") from None
        if not batches or batches[0] < 1:
            raise InputError(f"--batches={','.join(values)}: batch sizes must be >= 1")
        return {arch: batches for arch in archs}, None
    try:
        probe = batch_probe.read_table(probe_path)
    except ValueError as e:
        raise InputError(f"{probe_path}: not a probe table ({e})") from None
    table_i = {name: a.largest_batch for name, a in registry.ARCHITECTURES.items()}
    sizes = {arch: registry.input_size(arch, image_size) for arch in archs}
    largest = largest_batches(archs, table_i, sizes, probe)
    note = "largest batch: " + ", ".join(f"{arch} {n} ({source})" for arch, (n, source) in largest.items())
    return {arch: auto_batches(n) for arch, (n, _) in largest.items()}, note


def variants_from(base: Config, lrs: Optional[Sequence[str]], augments: Optional[Sequence[str]],
                  denoises: Optional[Sequence[str]], train_volume_counts: Optional[Sequence[str]] = None,
                  repeats: int = 1, trainables: Optional[Sequence[str]] = None) -> Dict[str, dict]:
    """{variant folder name: the Config fields it sets} for every combination of the sweep's variant axes.

    Args:
        base: The sweep's settings; an axis not given is base's one value.
        lrs: --lrs, learning rates as text.
        augments: --augments, one comma list of augmentations per variant ('none' for none).
        denoises: --denoises, one method per variant, or method:strength.
        train_volume_counts: --train_volume_counts, learning-curve points: numbers of volumes, or 'all'.
        repeats: --repeats, draws of each number of volumes.
        trainables: --trainables, what trains: all, head, two_phase (octtl.training.config.TRAINABLE).
    """
    try:
        rates = [float(v) for v in lrs] if lrs else [base.lr]
    except ValueError:
        raise InputError(f"--lrs={','.join(lrs)}: a comma list of learning rates") from None
    if any(not 0 < lr < float("inf") for lr in rates):
        raise InputError(f"--lrs={','.join(map(str, rates))}: learning rates must be finite and > 0")
    methods = []
    for value in denoises or [base.denoise + (f":{base.denoise_strength:g}" if base.denoise_strength else "")]:
        method, _, strength = value.partition(":")
        try:
            methods.append((method, float(strength) if strength else None))
        except ValueError:
            raise InputError(f"--denoises={value}: a method, or method:strength") from None
    try:
        augmentations = [",".join(augment_numpy.parse(value)) for value in (augments or [base.augment])]
        for method, strength in methods:
            denoise.check(method, strength)
    except InputError as e:
        raise InputError(str(e).replace("--augment=", "--augments=").replace("--denoise=", "--denoises=")) from None
    settings = list(dict.fromkeys(trainables or [base.trainable]))
    unknown = [t for t in settings if t not in TRAINABLE]
    if unknown:
        raise InputError(f"--trainables={','.join(settings)}: {', '.join(unknown)} unknown; choose from "
                         f"{', '.join(TRAINABLE)}")
    points = curve_points(base, train_volume_counts, repeats)
    out = {}
    for lr in rates:
        for augmentation in augmentations:
            for method, strength in methods:
                for trainable in settings:
                    for point in points:
                        fields = dict(lr=lr, augment=augmentation, denoise=method, denoise_strength=strength,
                                      trainable=trainable, **point)
                        out.setdefault(dataclasses.replace(base, **fields).variant_name, fields)
    return out


def curve_points(base: Config, counts: Optional[Sequence[str]], repeats: int) -> List[dict]:
    """The learning curve's points as Config fields: each number of volumes x each repeat; 'all' once."""
    if not counts:
        return [dict(train_volumes=base.train_volumes, repeat=base.repeat)]
    if repeats < 1:
        raise InputError(f"--repeats={repeats}: must be >= 1")
    out = []
    for value in dict.fromkeys(counts):
        if value == "all":
            out.append(dict(train_volumes="all", repeat=0))
        elif value.isdigit() and int(value) >= 1:
            out += [dict(train_volumes=value, repeat=r) for r in range(repeats)]
        else:
            raise InputError(f"--train_volume_counts={','.join(counts)}: numbers of volumes >= 1, or all")
    return out


@dataclasses.dataclass
class Plan:
    """A sweep's runs and how to train and judge each.

    Attributes:
        runs: Every run of the grid that fits the data, in plan order.
        base: The sweep's settings (network, batch and variant are set per run).
        variants: {variant folder name: the Config fields it sets}.
        identity: The records' identity (octtl.data.records.identity); None for a dry run without data.
        note: Where the batches came from and what was left out, or None.
    """

    runs: List[Run]
    base: Config
    variants: Dict[str, dict]
    identity: Optional[dict] = None
    note: Optional[str] = None

    def config(self, run: Run) -> Config:
        """The settings `run` trains with."""
        return dataclasses.replace(self.base, arch=run.arch, batch=run.batch, **self.variants[run.variant])

    def stale(self, run: Run, result: dict) -> Optional[str]:
        """Why a finished result of `run` does not answer the plan; None when it does (or --overwrite)."""
        if self.identity is None or self.base.overwrite:
            return None
        return runs.stale_reason(result, planned(self.config(run), self.identity, result))


def build(base: Config, archs: Sequence[str], designs: Sequence[str], batches: Sequence[str],
          probe_path, lrs=None, augments=None, denoises=None, train_volume_counts=None, repeats=1,
          trainables=None) -> Plan:
    """The sweep's plan from its settings: the grid, fitted to the records when `base.data_dir` names them.

    Runs whose batch exceeds their design's smallest training set are left out (octtl.train refuses them), said
    in the plan's note; every task computes the same split from the same records, so the plan is the same on
    every machine.
    """
    from octtl.data import records

    archs, designs = archs_from(archs), designs_from(designs)
    if train_volume_counts and train_volume_counts != ["all"]:
        if designs != ["baseline"]:
            raise InputError(f"--train_volume_counts: learning curves draw volumes from the baseline design's "
                             f"training folds; --designs={','.join(designs)} asks for others")
        check_curve_point(dataclasses.replace(base, design="baseline", train_volumes="1"))
    if protocol.VENDOR in designs:
        check_design(dataclasses.replace(base, design=protocol.VENDOR))
        if not base.data_dir:
            raise InputError("--designs=vendor: needs --data_dir (its folds are the records' vendors)")
    sizes, note = batches_from(batches, archs, probe_path, base.image_size)
    variants = variants_from(base, lrs, augments, denoises, train_volume_counts, repeats, trainables)
    counts = dict.fromkeys(designs, base.folds)  # the vendor design's: one per vendor of the records
    identity, smallest = None, None
    if base.data_dir:
        metadata = records.read_metadata(base.data_dir)
        groups_ = metadata.volume_ids if base.group_by_volume else None
        try:
            smallest = smallest_train_sets(metadata.labels, designs, base.folds, base.seed, groups_, base.held_out)
            if protocol.VENDOR in designs:
                counts[protocol.VENDOR], smallest[protocol.VENDOR] = vendor_folds(metadata, base)
        except ValueError as e:  # InputError (the vendors) names its flag already
            raise e if isinstance(e, InputError) else InputError(f"{base.data_dir}: {e}") from None
    runs_ = grid(designs, archs, sizes, counts, list(variants))
    if base.data_dir:
        runs_, dropped = runnable(runs_, smallest)
        identity = records.identity(base.data_dir)
        if dropped:
            note = (note + "; " if note else "") + (
                f"left out {console.count(len(dropped), 'run')} whose batch exceeds the training set: "
                + ", ".join(sorted({f"{r.design} batch {r.batch}" for r in dropped})))
    return Plan(runs_, base, variants, identity, note)
