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

from absl import app
from absl import flags

from octtl.nets import registry
from octtl import cli
from octtl import protocol
from octtl import runs
from octtl import train as _train  # defines the training flags, which every run of the sweep takes
from octtl import console
from octtl.training.config import Config

_ARCHS = flags.DEFINE_list("archs", ["all"], "Networks: all, or a comma-separated list of Table I names.")
_BATCHES = flags.DEFINE_list("batches", ["auto"],
                             "Batch sizes: auto (8, 16, ... up to each network's largest) or a list, e.g. 8,16,32.")
_DESIGNS = flags.DEFINE_list("designs", None, "Designs to run (baseline,limited); default the --design flag's.")
_TASK_INDEX = flags.DEFINE_integer("task_index", 0, "This task's share of the runs: 0..num_tasks-1.", lower_bound=0)
_NUM_TASKS = flags.DEFINE_integer("num_tasks", 1, "Tasks sharing the sweep.", lower_bound=1)
_GPUS = flags.DEFINE_list("gpus", None, "One worker per listed GPU (CUDA_VISIBLE_DEVICES), e.g. 0,1.")
_LRS = flags.DEFINE_list("lrs", None, "Learning rates to sweep, e.g. 1e-4,3e-4,1e-3 (default: --lr's).")
_AUGMENTS = flags.DEFINE_multi_string(
    "augments", None, "One augmentation variant per use: --augments=none --augments=flip,shift (default: --augment).")
_DENOISES = flags.DEFINE_multi_string(
    "denoises", None, "One denoising variant per use: --denoises=none --denoises=nlm (or nlm:12 with a strength; "
    "default: --denoise).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan (runs, done, stale, to do, time estimate) and exit.")
_COLLECT = flags.DEFINE_bool("collect", False, "Rebuild LOGDIR/results.jsonl from the run folders and exit.")
_MAX_BATCH_FILE = flags.DEFINE_string(
    "max_batch_file", None, f"Largest-batch probe table for --batches=auto; default LOGDIR/{runs.MAX_BATCH}.")

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("workers")
flags.adopt_module_key_flags(_train)  # every octtl.train flag passes through to the runs



def _value(name):
    return flags.FLAGS[name].value


def archs_from(names) -> list:
    """--archs as a list of registry names, in Table I order for 'all' and as given otherwise."""
    if names == ["all"]:
        return list(registry.ARCHITECTURES)
    unknown = [n for n in names if n not in registry.ARCHITECTURES]
    if unknown or not names:
        raise ValueError(f"--archs={','.join(names)}: unknown network(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose all or from {', '.join(registry.ARCHITECTURES)}")
    return list(dict.fromkeys(names))


def designs_from(names) -> list:
    """The --designs names in order, each once; ValueError for none or an unknown one."""
    unknown = [n for n in names if n not in protocol.DESIGNS]
    if unknown or not names:
        raise ValueError(f"--designs={','.join(names)}: choose from {', '.join(protocol.DESIGNS)}")
    return list(dict.fromkeys(names))


def batches_from(values, archs, logdir, max_batch_file, image_size):
    """{arch: batch sizes} and, for auto, a line saying where each largest batch came from."""
    from octtl.study import batch_probe
    from octtl.study import runner

    if values != ["auto"]:
        try:
            batches = sorted({int(v) for v in values})
        except ValueError:
            raise ValueError(f"--batches={','.join(values)}: auto or a list of integers") from None
        if not batches or batches[0] < 1:
            raise ValueError(f"--batches={','.join(values)}: batch sizes must be >= 1")
        return {arch: batches for arch in archs}, None
    path = max_batch_file or pathlib.Path(logdir) / runs.MAX_BATCH
    try:
        probe = batch_probe.read_table(path)
    except ValueError as e:
        raise ValueError(f"{path}: not a probe table ({e})") from None
    table_i = {name: a.largest_batch for name, a in registry.ARCHITECTURES.items()}
    sizes = {arch: registry.input_size(arch, image_size) for arch in archs}
    largest = runner.largest_batches(archs, table_i, sizes, probe)
    note = "largest batch: " + ", ".join(f"{arch} {n} ({source})" for arch, (n, source) in largest.items())
    return {arch: runner.auto_batches(n) for arch, (n, _) in largest.items()}, note


def training_config():
    """octtl.train's flags as the sweep's base Config; the sweep sets network, batch, design and fold per run.

    Raises:
        ValueError: a training flag that contradicts the sweep (it chooses networks, batches and folds).
    """
    for name, instead in (("arch", "--archs"), ("batch", "--batches")):
        if flags.FLAGS[name].present:
            raise ValueError(f"--{name}: the sweep sets it per run; use {instead}")
    if flags.FLAGS["fold"].present and _value("fold") != -1:
        raise ValueError(f"--fold={_value('fold')}: the sweep runs every fold (use octtl.train for one)")
    # The study needs the results; a best.keras per run (VGG16's is 0.5 GB) only on request.
    save = _value("save_model") if flags.FLAGS["save_model"].present else False
    return dataclasses.replace(_train.config_from_flags(), arch="squeezenet", batch=1, fold=0, save_model=save)


def variants_from(base) -> dict:
    """{variant folder name: the Config fields it sets} for every combination of --lrs, --augments, --denoises.

    Raises:
        ValueError: a value that is not a learning rate, an augmentation list or a denoising method (named).
    """
    from octtl.data import augment
    from octtl.data import denoise
    from octtl.errors import InputError

    try:
        lrs = [float(v) for v in _LRS.value] if _LRS.value else [base.lr]
    except ValueError:
        raise ValueError(f"--lrs={','.join(_LRS.value)}: a comma list of learning rates") from None
    if any(not 0 < lr < float("inf") for lr in lrs):
        raise ValueError(f"--lrs={','.join(map(str, lrs))}: learning rates must be finite and > 0")
    denoises = []
    for value in _DENOISES.value or [f"{base.denoise}" + (f":{base.denoise_strength:g}" if base.denoise_strength
                                                          else "")]:
        method, _, strength = value.partition(":")
        try:
            denoises.append((method, float(strength) if strength else None))
        except ValueError:
            raise ValueError(f"--denoises={value}: a method, or method:strength") from None
    try:
        augments = [",".join(augment.parse(value)) for value in (_AUGMENTS.value or [base.augment])]
        for method, strength in denoises:
            denoise.check(method, strength)
    except InputError as e:
        raise ValueError(str(e).replace("--augment=", "--augments=").replace("--denoise=", "--denoises=")) from None
    out = {}
    for lr in lrs:
        for augmentation in augments:
            for method, strength in denoises:
                fields = dict(lr=lr, augment=augmentation, denoise=method, denoise_strength=strength)
                out.setdefault(dataclasses.replace(base, **fields).variant_name, fields)
    return out


def passthrough_args() -> list:
    """The octtl.train flags given to the sweep, as the equivalent octtl.train command takes them."""
    per_run = ("data_dir", "logdir", "folds", "design", "arch", "batch", "fold")
    names = [field.name for field in dataclasses.fields(Config) if field.name not in per_run]
    return [flags.FLAGS[name].serialize() for name in sorted(names) if flags.FLAGS[name].present]


def fit_to_data(plan, data_dir, designs):
    """Leaves out runs whose batch is larger than their training set (octtl.train would refuse them).

    Every task computes the same split from the same records, so the plan stays the same on every machine.
    """
    from octtl.data import records
    from octtl.study import runner

    metadata = records.read_metadata(data_dir)
    groups = metadata.volume_ids if _value("group_by_volume") else None
    smallest = runner.smallest_train_sets(metadata.labels, designs, _value("folds"), _value("seed"), groups)
    return runner.runnable(plan, smallest)


def _terminate(signum, frame):
    # Slurm and Kubernetes stop a task with SIGTERM: stop the running workers too, then exit.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv):
    """The sweep command: runs the study's runs in workers, or prints the plan (--dry_run), or collects results."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logdir = _value("logdir")
    if _COLLECT.value:
        count = runs.rebuild(logdir)
        print(f"sweep: {pathlib.Path(logdir) / runs.RESULTS}: {count} results from the run folders")
        return
    from octtl import console
    from octtl.study import runner
    from octtl.errors import InputError

    console.start_tensorflow()  # checking --augments, and later the records' index, imports TensorFlow: quietly
    try:
        archs = archs_from(_ARCHS.value)
        designs = designs_from(_DESIGNS.value or [_value("design")])
        batches, note = batches_from(_BATCHES.value, archs, logdir, _MAX_BATCH_FILE.value, _value("image_size"))
        base = training_config()
        variants = variants_from(base)
        if _TASK_INDEX.value >= _NUM_TASKS.value:
            raise ValueError(f"--task_index={_TASK_INDEX.value}: must be below --num_tasks={_NUM_TASKS.value}")
    except ValueError as e:
        sys.exit(f"sweep: error: {e}")
    data_dir = _value("data_dir")
    plan = runner.plan(designs, archs, batches, _value("folds"), list(variants))
    identity = None
    if data_dir:
        from octtl.data import records

        try:
            plan, dropped = fit_to_data(plan, data_dir, designs)
            identity = records.identity(data_dir)
        except (InputError, ValueError) as e:
            sys.exit(f"sweep: error: {e}")
        if dropped:
            note = (note + "; " if note else "") + (
                f"left out {console.count(len(dropped), 'run')} whose batch exceeds the training set: "
                + ", ".join(sorted({f"{r.design} batch {r.batch}" for r in dropped})))
    elif not _DRY_RUN.value:
        sys.exit("sweep: error: --data_dir: required (the records written by tools/to_tfrecord.py)")
    mine = runner.shard(plan, _TASK_INDEX.value, _NUM_TASKS.value)
    task = f" (task {_TASK_INDEX.value} of {_NUM_TASKS.value})" if _NUM_TASKS.value > 1 else ""

    def config_for(run):
        return dataclasses.replace(base, arch=run.arch, batch=run.batch, **variants[run.variant])

    def stale(run, result):
        if identity is None or base.overwrite:
            return None
        return runs.stale_reason(result, runs.planned(config_for(run), identity, result))

    if _DRY_RUN.value:
        if note:
            print(note)
        states = runner.status(logdir, mine, stale)
        print("\n".join(runner.describe(mine, logdir, plan, states, task)))
        todo = [run for run in mine if states[run] == "to do"]
        if todo:
            variant = [f"--{name}={value}" for name, value in variants[todo[0].variant].items() if value is not None]
            command = runner.train_command(todo[0], data_dir, logdir, _value("folds"), passthrough_args() + variant)
            print("first run to do, as one octtl.train: python " + " ".join(command[1:]))
        return

    def spec(members):
        config = dataclasses.replace(config_for(members[0]), overwrite=False)
        return {"config": dataclasses.asdict(config), "redo_stale": base.overwrite,
                "runs": [[r.design, r.arch, r.batch, r.fold, r.variant] for r in members]}

    signal.signal(signal.SIGTERM, _terminate)
    groups = runner.groups(mine)
    workers = len(_GPUS.value) if _GPUS.value else (cli.WORKERS.value or 1)
    print(f"sweep: {console.count(len(mine), 'run')}{task} in {console.count(len(groups), 'network x batch x variant group')}, "
          f"{console.count(workers, 'worker')} at once"
          + (f"; {note}" if note else ""), flush=True)
    try:
        counts = runner.sweep(groups, logdir, spec, workers=workers, gpus=_GPUS.value or (),
                                say=lambda line: print(line, flush=True))
    except KeyboardInterrupt as e:
        sys.exit(f"sweep: interrupted ({e or 'keyboard'}); run the same command again to finish")
    print(f"sweep: {console.count(counts['planned'], 'run')}{task}: {counts['skipped']} done before, {counts['ran']} ran now "
          f"({counts['failed']} failed, {counts['crashed']} without a result), {counts['stale']} stale, "
          f"{counts['busy']} left to another sweep; results in {pathlib.Path(logdir) / runs.RESULTS}")
    for problem in counts["problems"]:
        print(f"  {problem}")
    if counts["problems"]:
        sys.exit(1)


def run():
    """Console-script entry point: parses the flags and runs main."""
    app.run(main)


if __name__ == "__main__":
    run()
