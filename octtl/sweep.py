r"""Runs the paper's study: every network x batch size x design x fold, one `octtl.train` process per run.

  python -m octtl.sweep --flagfile=flags/paper_sweep.cfg [--dry_run]
  python -m octtl.sweep --data_dir=data/records --logdir=runs --archs=vgg16,alexnet --batches=8,16 \
      --designs=baseline --folds=10 [--task_index=I --num_tasks=N] [any octtl.train flag]
  python -m octtl.sweep --logdir=runs --collect

A run whose result.json exists is skipped, so re-running after a crash or kill finishes the rest and repeats
nothing; an interrupted run restarts from scratch. `--task_index/--num_tasks` give task I every N-th run of the
plan, so N machines or GPUs (a Slurm job array, a Kubernetes Indexed Job) share LOGDIR with no overlap; every
task must be given the same plan flags (and the same LOGDIR/max_batch.json). Each finished run is appended to
LOGDIR/results.jsonl; `--collect` rebuilds that file from the run folders. Each run's console output goes to
LOGDIR/logs/{design}/{arch}/batch{batch}/fold{fold}.log.

Runs whose batch is larger than their design's training set (octtl.train refuses those) are left out of the
plan, with a note. Two sweeps never train the same run at once (a lock per run), and the sweep exits 1 when
any of its runs failed or ended without a result.

`--batches=auto` is 8, 16, 32, ... up to each network's largest batch: the probe's value from
`--max_batch_file` (default LOGDIR/max_batch.json, written by `python -m octtl.max_batch`) when it was measured
at the input size the sweep trains at, else Table I's.
"""

import os
import pathlib
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from octtl import architectures  # noqa: E402
from octtl import experiments  # noqa: E402
from octtl import folds as folds_lib  # noqa: E402
from octtl import train as _train  # noqa: E402  (defines the training flags, which pass through to each run)
from octtl.errors import InputError  # noqa: E402

_ARCHS = flags.DEFINE_list("archs", ["all"], "Networks: all, or a comma-separated list of Table I names.")
_BATCHES = flags.DEFINE_list("batches", ["auto"],
                             "Batch sizes: auto (8, 16, ... up to each network's largest) or a list, e.g. 8,16,32.")
_DESIGNS = flags.DEFINE_list("designs", None, "Designs to run (baseline,limited); default the --design flag's.")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This task's share of the runs: 0..num_tasks-1.", lower_bound=0)
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 1, "Tasks sharing the sweep.", lower_bound=1)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (runs, done, to do, time estimate) and exit.")
_COLLECT = flags.DEFINE_bool("collect", False, "Rebuild LOGDIR/results.jsonl from the run folders and exit.")
_MAX_BATCH_FILE = flags.DEFINE_string(
    "max_batch_file", None, f"Largest-batch probe table for --batches=auto; default LOGDIR/{experiments.MAX_BATCH}.")

# The sweep sets these per run (or always forwards them) rather than passing the user's value through.
_PER_RUN = ("data_dir", "logdir", "folds", "design", "arch", "batch", "fold")


def _value(name):
    return flags.FLAGS[name].value


def archs_from(names) -> list:
    """--archs as a list of registry names, in Table I order for 'all' and as given otherwise."""
    if names == ["all"]:
        return list(architectures.ARCHITECTURES)
    unknown = [n for n in names if n not in architectures.ARCHITECTURES]
    if unknown or not names:
        raise ValueError(f"--archs={','.join(names)}: unknown network(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose all or from {', '.join(architectures.ARCHITECTURES)}")
    return list(dict.fromkeys(names))


def designs_from(names) -> list:
    unknown = [n for n in names if n not in folds_lib.DESIGNS]
    if unknown or not names:
        raise ValueError(f"--designs={','.join(names)}: choose from {', '.join(folds_lib.DESIGNS)}")
    return list(dict.fromkeys(names))


def batches_from(values, archs, logdir, max_batch_file, image_size):
    """{arch: batch sizes} and, for auto, a line saying where each largest batch came from."""
    if values != ["auto"]:
        try:
            batches = sorted({int(v) for v in values})
        except ValueError:
            raise ValueError(f"--batches={','.join(values)}: auto or a list of integers") from None
        if not batches or batches[0] < 1:
            raise ValueError(f"--batches={','.join(values)}: batch sizes must be >= 1")
        return {arch: batches for arch in archs}, None
    path = max_batch_file or pathlib.Path(logdir) / experiments.MAX_BATCH
    try:
        probe = experiments.read_max_batch(path)
    except ValueError as e:
        raise ValueError(f"{path}: not a probe table ({e})") from None
    table_i = {name: a.largest_batch for name, a in architectures.ARCHITECTURES.items()}
    sizes = {arch: image_size or architectures.ARCHITECTURES[arch].input_size for arch in archs}
    largest = experiments.largest_batches(archs, table_i, sizes, probe)
    note = "largest batch: " + ", ".join(f"{arch} {n} ({source})" for arch, (n, source) in largest.items())
    return {arch: experiments.auto_batches(n) for arch, (n, _) in largest.items()}, note


def passthrough_args() -> list:
    """The octtl.train flags given to the sweep (command line or flagfile), as arguments for every run.

    Raises:
        ValueError: a training flag that contradicts the sweep (it chooses networks, batches and folds).
    """
    train_flags = {f.name: f for f in flags.FLAGS.get_flags_for_module(_train)}
    for name, instead in (("arch", "--archs"), ("batch", "--batches")):
        if train_flags[name].present:
            raise ValueError(f"--{name}: the sweep sets it per run; use {instead}")
    if train_flags["fold"].present and train_flags["fold"].value != -1:
        raise ValueError(f"--fold={train_flags['fold'].value}: the sweep runs every fold (use octtl.train for one)")
    if train_flags["overwrite"].value:
        raise ValueError("--overwrite: the sweep never redoes a finished run; delete its folder to redo it")
    return [f.serialize() for name, f in sorted(train_flags.items()) if f.present and name not in _PER_RUN]


def fit_to_data(runs, data_dir, designs):
    """Leaves out runs whose batch is larger than their training set (octtl.train would refuse them).

    Every task computes the same split from the same records, so the plan stays the same on every machine.
    """
    from octtl import data

    metadata = data.read_metadata(data_dir)
    groups = metadata.volume_ids if _value("group_by_volume") else None
    smallest = experiments.smallest_train_sets(metadata.labels, designs, _value("folds"), _value("seed"), groups)
    return experiments.runnable(runs, smallest)


def _terminate(signum, frame):
    # Slurm and Kubernetes stop a task with SIGTERM: stop the running child too, then exit.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logdir = _value("logdir")
    if _COLLECT.value:
        count = experiments.rebuild(logdir)
        print(f"sweep: {pathlib.Path(logdir) / experiments.RESULTS}: {count} results from the run folders")
        return
    try:
        archs = archs_from(_ARCHS.value)
        designs = designs_from(_DESIGNS.value or [_value("design")])
        batches, note = batches_from(_BATCHES.value, archs, logdir, _MAX_BATCH_FILE.value, _value("image_size"))
        passthrough = passthrough_args()
        if _TASK_INDEX.value >= _NUM_TASKS.value:
            raise ValueError(f"--task_index={_TASK_INDEX.value}: must be below --num_tasks={_NUM_TASKS.value}")
    except ValueError as e:
        sys.exit(f"sweep: error: {e}")
    data_dir = _value("data_dir")
    runs = experiments.plan(designs, archs, batches, _value("folds"))
    if data_dir is not None:
        try:
            from octtl import console

            console.start_tensorflow()  # reading the records' index imports TensorFlow: quietly
            runs, dropped = fit_to_data(runs, data_dir, designs)
        except (InputError, ValueError) as e:
            sys.exit(f"sweep: error: {e}")
        if dropped:
            note = (note + "; " if note else "") + (
                f"left out {len(dropped)} runs whose batch exceeds the training set: "
                + ", ".join(sorted({f"{r.design} batch {r.batch}" for r in dropped})))
    elif not _DRY_RUN.value:
        sys.exit("sweep: error: --data_dir: required (the records written by tools/to_tfrecord.py)")
    mine = experiments.shard(runs, _TASK_INDEX.value, _NUM_TASKS.value)
    task = f" (task {_TASK_INDEX.value} of {_NUM_TASKS.value})" if _NUM_TASKS.value > 1 else ""

    def command_for(run):
        return experiments.train_command(run, data_dir, logdir, _value("folds"), passthrough)

    if _DRY_RUN.value:
        if note:
            print(note)
        print("\n".join(experiments.describe(mine, logdir, runs, task)))
        todo = [run for run in mine if not experiments.is_done(logdir, run)]
        if todo:
            print("first run to do: python " + " ".join(command_for(todo[0])[1:]))
        return

    signal.signal(signal.SIGTERM, _terminate)
    print(f"sweep: {len(mine)} runs{task}" + (f"; {note}" if note else ""), flush=True)
    try:
        counts = experiments.sweep(mine, logdir, command_for, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt as e:
        sys.exit(f"sweep: interrupted ({e or 'keyboard'}); run the same command again to finish")
    print(f"sweep: {counts['planned']} runs{task}: {counts['skipped']} done before, {counts['ran']} ran now "
          f"({counts['failed']} failed, {counts['crashed']} without a result), {counts['busy']} left to another "
          f"sweep; results in "
          f"{pathlib.Path(logdir) / experiments.RESULTS}")
    for problem in counts["problems"]:
        print(f"  {problem}")
    if counts["problems"]:
        sys.exit(1)


def run():
    # octtl.train requires --data_dir, --arch and --batch; the sweep supplies the last two per run and needs no
    # data for --collect or --dry_run, so those checks are dropped (here, not at import, which tests share).
    for name in ("data_dir", "arch", "batch"):
        flags.FLAGS[name].validators.clear()
    app.run(main)


if __name__ == "__main__":
    run()
