r"""Runs the paper's study: every network x batch size x design x fold, one training session per network x batch.

  python -m octtl.sweep --flagfile=flags/paper_sweep.cfg [--dry_run]
  python -m octtl.sweep --data_dir=data/records --logdir=runs --archs=vgg16,alexnet --batches=8,16 \
      --designs=baseline --folds=10 [--workers=N | --gpus=0,1] [--task_index=I --num_tasks=N] [octtl.train flags]
  python -m octtl.sweep --logdir=runs --collect

Execution: the runs of one network at one batch size (both designs, every fold) go to one worker process, which
decodes the records once, builds and compiles the network once, and trains each run on it exactly as a fresh
`octtl.train` process would (octtl.training.session.Session). `--workers=N` runs N such groups at once (on a GPU they
share the card, memory growth on); `--gpus=0,1` pins one worker to each listed GPU. Each run's console output
goes to LOGDIR/logs/{design}/{arch}/batch{batch}/fold{fold}.log, each finished run is appended to
LOGDIR/results.jsonl, and `--collect` rebuilds that file from the run folders.

A finished run is skipped when its result records the plan's configuration (data, folds, input, weights,
scaling, protocol); one that records another is stale: named, left as it is, and redone with --overwrite. An
interrupted run restarts from scratch, so re-running after a crash or `kill -9` finishes the rest and repeats
nothing. `--task_index/--num_tasks` give task I every N-th run of the plan, so N machines or GPUs (a Slurm job
array, a Kubernetes Indexed Job) share LOGDIR with no overlap; give every task the same plan flags. Two sweeps
never train the same run at once (a lock per run), and the sweep exits 1 when any of its runs failed, is stale
or ended without a result. The sweep saves no best.keras unless --save_model (retrain the one you want).

Runs whose batch is larger than their design's training set (octtl.train refuses those) are left out, with a
note. `--batches=auto` is 8, 16, 32, ... up to each network's largest batch: the probe's value from
`--max_batch_file` (default LOGDIR/max_batch.json, written by `python -m octtl.max_batch`) when it was measured
at the input size the sweep trains at, else Table I's.
"""

import dataclasses
import pathlib
import signal
import sys

from absl import flags

from octtl import cli, console, runs
from octtl import train as _train  # defines the training flags, which every run of the sweep takes
from octtl.errors import InputError
from octtl.training.config import Config

_ARCHS = flags.DEFINE_list("archs", ["all"], "Networks: all, or a comma-separated list of Table I names.")
_BATCHES = flags.DEFINE_list("batches", ["auto"],
                             "Batch sizes: auto (8, 16, ... up to each network's largest) or a list, e.g. 8,16,32.")
_DESIGNS = flags.DEFINE_list("designs", None, "Designs to run (baseline,limited,vendor); default the --design "
                             "flag's. vendor: one fold per vendor of the records, each held out in turn.")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This task's share of the runs: 0..num_tasks-1.", lower_bound=0)
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 1, "Tasks sharing the sweep.", lower_bound=1)
_GPUS = flags.DEFINE_list("gpus", None, "One worker per listed GPU (CUDA_VISIBLE_DEVICES), e.g. 0,1.")
_LRS = flags.DEFINE_list("lrs", None, "Learning rates to sweep, e.g. 1e-4,3e-4,1e-3 (default: --lr's).")
_AUGMENTS = flags.DEFINE_multi_string(
    "augments", None, "One augmentation variant per use: --augments=none --augments=flip,shift (default: --augment).")
_DENOISES = flags.DEFINE_multi_string(
    "denoises", None, "One denoising variant per use: --denoises=none --denoises=nlm (or nlm:12 with a strength; "
    "default: --denoise).")
_TRAINABLES = flags.DEFINE_list(
    "trainables", None, "What trains, one variant each: all (fine-tune every layer), head (frozen backbone), "
    "two_phase; e.g. all,head,two_phase (default: --trainable).")
_TRAIN_VOLUME_COUNTS = flags.DEFINE_list(
    "train_volume_counts", None, "A learning curve: numbers of training volumes, e.g. 1,2,4,8,16,all (baseline "
    "design, grouped folds; every point trains for the whole folds' iterations).")
_REPEATS = flags.DEFINE_integer("repeats", 1, "Draws of each --train_volume_counts number.", lower_bound=1)
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (runs, done, stale, to do, time estimate) and exit.")
_COLLECT = flags.DEFINE_bool("collect", False, "Rebuild LOGDIR/results.jsonl from the run folders and exit.")
_MAX_BATCH_FILE = flags.DEFINE_string(
    "max_batch_file", None, f"Largest-batch probe table for --batches=auto; default LOGDIR/{runs.MAX_BATCH}.")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("workers")
flags.adopt_module_key_flags(_train)  # every octtl.train flag passes through to the runs


def training_config() -> Config:
    """octtl.train's flags as the sweep's base Config; the sweep sets network, batch, design and fold per run."""
    for name, instead in (("arch", "--archs"), ("batch", "--batches")):
        if flags.FLAGS[name].present:
            raise InputError(f"--{name}: the sweep sets it per run; use {instead}")
    if flags.FLAGS["fold"].present and flags.FLAGS.fold != -1:
        raise InputError(f"--fold={flags.FLAGS.fold}: the sweep runs every fold (use octtl.train for one)")
    # The study needs the results; a best.keras per run (VGG16's is 0.5 GB) only on request.
    save = flags.FLAGS.save_model if flags.FLAGS["save_model"].present else False
    return dataclasses.replace(_train.config_from_flags(), arch="squeezenet", batch=1, fold=0, save_model=save)


def passthrough_args() -> list:
    """The octtl.train flags given to the sweep, as the equivalent octtl.train command takes them."""
    per_run = ("data_dir", "logdir", "folds", "design", "arch", "batch", "fold")
    names = [field.name for field in dataclasses.fields(Config) if field.name not in per_run]
    return [flags.FLAGS[name].serialize() for name in sorted(names) if flags.FLAGS[name].present]


def _terminate(signum, frame):
    # Slurm and Kubernetes stop a task with SIGTERM: stop the running workers too, then exit.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    """The sweep command: runs the study's runs in workers, or prints the plan (--dry_run), or collects results."""
    cli.no_arguments(argv)
    logdir = cli.LOGDIR.value
    if _COLLECT.value:
        count = runs.rebuild(logdir)
        print(f"sweep: {pathlib.Path(logdir) / runs.RESULTS}: {count} results from the run folders")
        return
    from octtl.study import plan as planning

    if _TASK_INDEX.value >= _NUM_TASKS.value:
        raise InputError(f"--task_index={_TASK_INDEX.value}: must be below --num_tasks={_NUM_TASKS.value}")
    base = training_config()
    if not base.data_dir and not _DRY_RUN.value:
        raise InputError("--data_dir: required (the records written by tools/to_tfrecord.py)")
    plan = planning.build(base, _ARCHS.value, _DESIGNS.value or [base.design], _BATCHES.value,
                          _MAX_BATCH_FILE.value or pathlib.Path(logdir) / runs.MAX_BATCH, _LRS.value,
                          _AUGMENTS.value, _DENOISES.value, _TRAIN_VOLUME_COUNTS.value, _REPEATS.value,
                          _TRAINABLES.value)
    mine = planning.shard(plan.runs, _TASK_INDEX.value, _NUM_TASKS.value)
    task = f" (task {_TASK_INDEX.value} of {_NUM_TASKS.value})" if _NUM_TASKS.value > 1 else ""
    if _DRY_RUN.value:
        _dry_run(plan, mine, logdir, task)
        return

    def spec(members):
        config = dataclasses.replace(plan.config(members[0]), overwrite=False)
        return {"config": dataclasses.asdict(config), "redo_stale": base.overwrite,
                "runs": [[r.design, r.arch, r.batch, r.fold, r.variant] for r in members]}

    signal.signal(signal.SIGTERM, _terminate)
    groups = planning.groups(mine)
    workers = len(_GPUS.value) if _GPUS.value else (cli.WORKERS.value or 1)
    print(f"sweep: {console.count(len(mine), 'run')}{task} in "
          f"{console.count(len(groups), 'network x batch x variant group')}, {console.count(workers, 'worker')} at once"
          + (f"; {plan.note}" if plan.note else ""), flush=True)
    from octtl.study import runner

    try:
        counts = runner.sweep(groups, logdir, spec, workers=workers, gpus=_GPUS.value or (),
                              say=lambda line: print(line, flush=True))
    except KeyboardInterrupt as e:
        sys.exit(f"sweep: interrupted ({e or 'keyboard'}); run the same command again to finish")
    print(f"sweep: {console.count(counts['planned'], 'run')}{task}: {counts['skipped']} done before, {counts['ran']} "
          f"ran now ({counts['failed']} failed, {counts['crashed']} without a result), {counts['stale']} stale, "
          f"{counts['busy']} left to another sweep; results in {pathlib.Path(logdir) / runs.RESULTS}")
    for problem in counts["problems"]:
        print(f"  {problem}")
    if counts["problems"]:
        sys.exit(1)


def _dry_run(plan, mine, logdir, task):
    """The plan's lines: runs, done, stale, to do, a time estimate, and the first run to do as one command."""
    from octtl.study import plan as planning

    if plan.note:
        print(plan.note)
    states = planning.status(logdir, mine, plan.stale)
    print("\n".join(planning.describe(mine, logdir, plan.runs, states, task)))
    todo = [run for run in mine if states[run] == "to do"]
    if todo:
        variant = [f"--{name}={value}" for name, value in plan.variants[todo[0].variant].items() if value is not None]
        command = planning.train_command(todo[0], plan.base.data_dir, logdir, plan.base.folds,
                                         passthrough_args() + variant)
        print("first run to do, as one octtl.train: python " + " ".join(command[1:]))


run = cli.command(main)

if __name__ == "__main__":
    run()
