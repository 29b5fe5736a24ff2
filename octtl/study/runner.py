"""The paper's study as a plan of runs, executed in groups: one worker process per network x batch x variant.

A run is one (design, arch, batch, fold) in one variant (octtl.runs). The plan is every run of the study in a
fixed order; `shard` gives each of N tasks every N-th run. Runs that share everything a training session holds
(the network and batch size, the variant's learning rate, augmentation and denoising; input size, weights,
scaling and precision are the sweep's own) form a group, and one worker process (octtl.study.worker) trains a whole
group in one session: records decoded once, network built and compiled once, every (design, fold) run of the
group on it, each exactly as a fresh `octtl.train` would.

The run folders are the truth: a run is done when its result.json exists and records the plan's configuration;
a worker claims a run with a lock on LOGDIR/logs/.../fold{fold}.lock (the kernel drops it when its holder dies,
even by SIGKILL), so two sweeps never train one run, and a killed sweep resumes by training the runs without a
result. Workers die with their sweep. This module imports neither TensorFlow nor Keras.
"""

import contextlib
import fcntl
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence

from octtl.data import folds as folds_lib
from octtl import protocol, runs
from octtl.runs import Run
from octtl import console

CRASHES_BEFORE_STOP = 3


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


def plan(designs: Sequence[str], archs: Sequence[str], batches: Dict[str, Sequence[int]], folds: int,
         variants: Sequence[str] = ("",)) -> List[Run]:
    """Every run of the study, in a fixed order (design, then arch as given, batch, variant, fold).

    Args:
        variants: The variants' folder names (octtl.results.variants.variant_name; '' for the defaults).
    """
    return [Run(design, arch, batch, fold, variant)
            for design in designs for arch in archs for batch in batches[arch] for variant in variants
            for fold in range(folds)]


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

    A variant's learning rate, augmentation and denoising are settings of the session (denoising changes the
    decoded B-scans), so each variant has its own.
    """
    out: Dict[tuple, List[Run]] = {}
    for run in runs_:
        out.setdefault((run.arch, run.batch, run.variant), []).append(run)
    return out


def smallest_train_sets(labels, designs: Sequence[str], folds: int, seed: int = 0, groups_=None) -> Dict[str, int]:
    """The smallest training set over the folds of each design (as octtl.train will split the data)."""
    return {design: min(len(folds_lib.split(labels, design, fold, folds, seed, groups_)[0])
                        for fold in range(folds)) for design in designs}


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


@contextlib.contextmanager
def claimed(logdir, run: Run):
    """Yields whether this process holds the run's lock (LOGDIR/logs/.../fold{fold}.lock), held until exit.

    Two sweeps given the same runs (a task started twice, a requeued job whose first copy still runs) then
    never train one run at the same time. The kernel drops the lock when its holder dies, even by SIGKILL.
    """
    path = run.log(logdir).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _tail(path, lines=15) -> str:
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def _die_with_parent():
    """In a worker, before exec: the kernel sends SIGKILL when the sweep dies, however it dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # Not Linux: an orphaned worker finishes its run and then finds its parent gone.


def sweep(groups_: Dict[tuple, List[Run]], logdir, spec: Callable[[List[Run]], dict], workers: int = 1,
          gpus: Sequence[str] = (), say: Callable[[str], None] = print) -> dict:
    """Trains every group's runs, one worker process per group and up to `workers` at once.

    Args:
        groups_: Runs by (arch, batch), as `groups` makes them.
        logdir: Root of the run folders.
        spec: The worker's job for a group's runs (octtl.study.worker.run_spec's argument, JSON-serialisable).
        workers: Groups trained at once; with `gpus`, one worker per listed GPU (CUDA_VISIBLE_DEVICES).
        say: Where progress lines go.

    Returns:
        Counts: planned, skipped (done before), stale (left), ran, failed (status failed), crashed (no result),
        busy (trained elsewhere), and `problems`, the runs without an ok result at the end.
    """
    runs.record(logdir, [r for r in (runs.result_of(logdir, run) for group in groups_.values() for run in group)
                         if r is not None])
    planned = sum(len(g) for g in groups_.values())
    counts = {"planned": planned, "skipped": 0, "stale": 0, "ran": 0, "failed": 0, "crashed": 0, "busy": 0,
              "problems": []}
    lock = threading.Lock()
    numbering = {run: k for k, run in enumerate((r for g in groups_.values() for r in g), 1)}
    pending = list(groups_.items())
    slots = list(gpus) if gpus else [None] * max(1, workers)
    stop = threading.Event()

    def report(line):
        with lock:
            say(line)

    def worker_loop(gpu):
        while not stop.is_set():
            with lock:
                if not pending:
                    return
                key, members = pending.pop(0)
            crashed = _run_group(key, members, logdir, spec(members), gpu, counts, numbering, planned, lock, report)
            if crashed >= CRASHES_BEFORE_STOP:
                report(f"sweep: {console.count(crashed, 'run')} of {_group_words(key)} ended without a result; stopping")
                stop.set()

    threads = [threading.Thread(target=worker_loop, args=(gpu,), daemon=True) for gpu in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # short waits keep the main thread responsive to signals
    return counts


def _run_group(key, members, logdir, job, gpu, counts, numbering, planned, lock, report) -> int:
    """Runs one worker on one group; relays its status lines; returns how many runs ended without a result."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    log = pathlib.Path(logdir) / runs.LOGS / "workers" / ("-".join([key[0], f"batch{key[1]}", *key[2:]]).rstrip("-")
                                                           + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({**job, "status_fd": write_fd}, f)
        spec_path = f.name
    reported = set()
    started = time.time()
    try:
        with open(log, "ab") as out:
            out.write(f"=== worker {time.strftime('%Y-%m-%dT%H:%M:%S')} host {socket.gethostname()} sweep pid "
                      f"{os.getpid()}\n".encode())
            out.flush()
            child = subprocess.Popen([sys.executable, "-m", "octtl.study.worker", spec_path], stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                     pass_fds=(write_fd,), preexec_fn=_die_with_parent)
            os.close(write_fd)
            write_fd = None
            with os.fdopen(read_fd, "r") as status_lines:
                read_fd = None
                for line in status_lines:
                    event = json.loads(line)
                    run = Run(*event["run"])
                    reported.add(run)
                    _count(event, run, logdir, counts, numbering[run], planned, lock, report)
            code = child.wait()
    except BaseException:
        if "child" in locals() and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        raise
    finally:
        for fd in (read_fd, write_fd):
            if fd is not None:
                os.close(fd)
        os.unlink(spec_path)
    missing = [run for run in members if run not in reported]
    for run in missing:
        with lock:
            counts["crashed"] += 1
            counts["problems"].append(f"{run}: the worker exited with status {code} before it")
    if missing:
        report(f"sweep: worker for {_group_words(key)} exited with status {code} after "
               f"{format_duration(time.time() - started)}, {console.count(len(missing), 'run')} left; its log ends:\n{_tail(log)}")
    return len(missing)


def _group_words(key) -> str:
    return " ".join([key[0], f"batch {key[1]}", *[k for k in key[2:] if k]])


def _count(event, run, logdir, counts, number, planned, lock, report):
    step = f"sweep: [{number}/{planned}] {run}"
    kind = event["event"]
    with lock:
        if kind == "skipped":
            counts["skipped"] += 1
        elif kind == "stale":
            counts["stale"] += 1
            counts["problems"].append(f"{run}: stale ({event['message']}); --overwrite redoes it")
        elif kind == "busy":
            counts["busy"] += 1
            counts["problems"].append(f"{run}: being trained by another sweep")
        elif kind == "error":
            counts["ran"] += 1
            counts["crashed"] += 1
            counts["problems"].append(f"{run}: {event['message']}")
        else:
            counts["ran"] += 1
            if event["result"].get("status") != "ok":
                counts["failed"] += 1
                counts["problems"].append(f"{run}: {runs.summary_line(event['result'])}")
    if kind == "skipped":
        return
    if kind == "done":
        result = event["result"]
        words = runs.summary_line({**result, "run_dir": None}).split(": ", 1)[1]
        report(f"{step}: {words} ({format_duration(result.get('wall_seconds', 0))}; log {run.log(logdir)})")
    elif kind == "busy":
        report(f"{step}: being trained by another sweep; left to it")
    elif kind == "stale":
        report(f"{step}: stale ({event['message']}); left as it is (--overwrite redoes it)")
    else:
        report(f"{step}: {event['message']}")


def train_command(run: Run, data_dir, logdir, folds: int, passthrough: Sequence[str]) -> List[str]:
    """The `python -m octtl.train` command that trains `run` alone, as the sweep's worker does."""
    return [sys.executable, "-m", "octtl.train", *passthrough, f"--data_dir={data_dir}", f"--logdir={logdir}",
            f"--folds={folds}", f"--design={run.design}", f"--arch={run.arch}", f"--batch={run.batch}",
            f"--fold={run.fold}"]
