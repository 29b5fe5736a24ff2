"""The paper's study as a list of runs: plan, shard, execute one process per run, and collect results.

A run is one (design, arch, batch, fold); its folder `LOGDIR/{design}/{arch}/batch{batch}/fold{fold}/` is the
truth: `result.json` appears there, atomically, when the run has finished (octtl.training). The sweep never
decides "done" any other way, so a sweep killed at any instant resumes by re-running the runs without one.

`LOGDIR/results.jsonl` holds one line per finished run (the `result.json` contents) so that reports need not
walk the folders. Lines are appended with one `write` on an `O_APPEND` descriptor while holding an exclusive
`flock` on `LOGDIR/results.jsonl.lock`: concurrent sweeps (several GPUs of one machine, or machines sharing
LOGDIR over NFSv4, where flock is emulated with POSIX locks) never interleave or duplicate lines. Where the
shared file system has no working locks, the folders are still right: rebuild the file with `--collect`.

This module takes plain values and does not import TensorFlow, so the report that reads results stays quick.
"""

import contextlib
import dataclasses
import fcntl
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from octtl import folds as folds_lib

# The same layout and file name as octtl.training (which imports TensorFlow); tests pin the two together.
RESULT = "result.json"
PREDICTIONS = "predictions.csv"  # the best model's validation predictions, read by the report's ROC curves
RESULTS = "results.jsonl"
LOCK = "results.jsonl.lock"
MAX_BATCH = "max_batch.json"
LOGS = "logs"
SMALLEST_BATCH = 8  # the paper varied the batch from 8 up to the largest that fitted
CRASHES_BEFORE_STOP = 3


@dataclasses.dataclass(frozen=True, order=True)
class Run:
    """One training run of the study: a network at a batch size on one fold of one design."""

    design: str
    arch: str
    batch: int
    fold: int

    def folder(self, logdir) -> pathlib.Path:
        return pathlib.Path(logdir) / self.design / self.arch / f"batch{self.batch}" / f"fold{self.fold}"

    def __str__(self):
        return f"{self.design} {self.arch} batch {self.batch} fold {self.fold}"


def run_of(result: dict) -> Run:
    """The run a result.json belongs to."""
    return Run(result["design"], result["arch"], int(result["batch"]), int(result["fold"]))


def auto_batches(largest: int, smallest: int = SMALLEST_BATCH) -> List[int]:
    """Powers of two from `smallest` up to `largest`; a network that fits less than `smallest` runs at `largest`."""
    if largest < 1:
        return []
    if largest < smallest:
        return [largest]
    batches = [smallest]
    while batches[-1] * 2 <= largest:
        batches.append(batches[-1] * 2)
    return batches


def plan(designs: Sequence[str], archs: Sequence[str], batches: Dict[str, Sequence[int]],
         folds: int) -> List[Run]:
    """Every run of the study, in a fixed order (design, then arch as given, batch, fold).

    Args:
        designs: 'baseline' and/or 'limited'.
        archs: Network names, in the order to run them.
        batches: Batch sizes of each network.
        folds: Cross-validation folds; every fold 0..folds-1 is a run.
    """
    return [Run(design, arch, batch, fold)
            for design in designs for arch in archs for batch in batches[arch] for fold in range(folds)]


def shard(runs: Sequence[Run], task_index: int, num_tasks: int) -> List[Run]:
    """Task `task_index`'s share of the runs: every num_tasks-th run.

    Striding (rather than contiguous blocks) gives every task a mix of networks and batch sizes, so tasks
    finish at about the same time; the shares of tasks 0..num_tasks-1 partition `runs`.
    """
    if num_tasks < 1 or not 0 <= task_index < num_tasks:
        raise ValueError(f"task_index must be in 0..num_tasks-1, got {task_index} of {num_tasks}")
    return list(runs[task_index::num_tasks])


def smallest_train_sets(labels, designs: Sequence[str], folds: int, seed: int = 0, groups=None) -> Dict[str, int]:
    """The smallest training set over the folds of each design (as octtl.train will split the data)."""
    return {design: min(len(folds_lib.split(labels, design, fold, folds, seed, groups)[0]) for fold in range(folds))
            for design in designs}


def runnable(runs: Sequence[Run], smallest: Dict[str, int]):
    """(runs whose batch fits the design's training set, the others), as octtl.train refuses a larger batch."""
    keep = [run for run in runs if run.batch <= smallest[run.design]]
    return keep, [run for run in runs if run.batch > smallest[run.design]]


def read_result(path) -> Optional[dict]:
    """A result.json, or None when it is absent (or, written by hand, unreadable)."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(logdir, run: Run) -> bool:
    return (run.folder(logdir) / RESULT).is_file()


def collect(logdir) -> List[dict]:
    """Every finished run's result.json under `logdir`, in run order."""
    results = []
    for path in pathlib.Path(logdir).glob(f"*/*/batch*/fold*/{RESULT}"):
        result = read_result(path)
        if result is not None:
            results.append(result)
    return sorted(results, key=run_of)


def _line(result: dict) -> bytes:
    return (json.dumps(result, sort_keys=True, allow_nan=False) + "\n").encode()


@contextlib.contextmanager
def _locked(logdir):
    """Exclusive lock on LOGDIR/results.jsonl.lock, shared by every sweep writing to this logdir."""
    pathlib.Path(logdir).mkdir(parents=True, exist_ok=True)
    fd = os.open(pathlib.Path(logdir) / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_results(path) -> List[dict]:
    """The lines of a results.jsonl, the last line of each run winning (a redone run appends a new line).

    Raises:
        ValueError: a line is not JSON, naming the line.
    """
    latest = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                result = json.loads(line)
                latest[run_of(result)] = result
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{number}: not a result line ({e})") from None
    return [latest[run] for run in sorted(latest)]


def record(logdir, results: Iterable[dict]) -> int:
    """Appends the results not yet in LOGDIR/results.jsonl (one atomic write per line); returns how many."""
    path = pathlib.Path(logdir) / RESULTS
    with _locked(logdir):
        present = {}
        if path.exists():
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


def rebuild(logdir) -> int:
    """Rewrites LOGDIR/results.jsonl from the run folders (the truth); returns the number of lines."""
    results = collect(logdir)
    path = pathlib.Path(logdir) / RESULTS
    with _locked(logdir):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(b"".join(_line(r) for r in results))
        os.replace(tmp, path)
    return len(results)


def read_max_batch(path) -> dict:
    """The probe table written by octtl.max_batch ({} when the probe has not been run)."""
    try:
        return json.loads(pathlib.Path(path).read_text())
    except FileNotFoundError:
        return {}


def largest_batches(archs: Sequence[str], table_i: Dict[str, int], image_sizes: Dict[str, int],
                    probe: dict) -> Dict[str, tuple]:
    """Each network's largest batch and where it came from: the probe when it measured this input size.

    Args:
        archs: Network names.
        table_i: Table I's largest batch of each network.
        image_sizes: Input size each network will be trained at.
        probe: The table of `read_max_batch`.

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


def estimate_seconds(finished: Sequence[dict], todo: Sequence[Run]) -> Optional[float]:
    """Time the to-do runs should take, from the wall time of finished runs most like each one.

    The mean over finished runs of the same (design, arch, batch), else (arch, batch), else arch, else all
    of them; None when nothing has finished yet.
    """
    times = [r for r in finished if isinstance(r.get("wall_seconds"), (int, float))]
    if not times:
        return None

    def mean_by(key):
        groups = {}
        for r in times:
            groups.setdefault(key(r), []).append(r["wall_seconds"])
        return {k: sum(v) / len(v) for k, v in groups.items()}

    levels = [
        (mean_by(lambda r: (r["design"], r["arch"], int(r["batch"]))), lambda u: (u.design, u.arch, u.batch)),
        (mean_by(lambda r: (r["arch"], int(r["batch"]))), lambda u: (u.arch, u.batch)),
        (mean_by(lambda r: r["arch"]), lambda u: u.arch),
    ]
    overall = sum(r["wall_seconds"] for r in times) / len(times)
    total = 0.0
    for run in todo:
        for means, key in levels:
            if key(run) in means:
                total += means[key(run)]
                break
        else:
            total += overall
    return total


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(runs: Sequence[Run], logdir, all_runs: Sequence[Run], task: str = "") -> List[str]:
    """The dry run's lines: runs planned, done, failed, to do, and a time estimate, per network and overall."""
    results = {run: read_result(run.folder(logdir) / RESULT) for run in runs}
    done = [r for r in results.values() if r is not None]
    failed = [r for r in done if r.get("status") != "ok"]
    todo = [run for run, r in results.items() if r is None]
    lines = []
    groups = {}
    for run in runs:
        groups.setdefault((run.design, run.arch), []).append(run)
    for (design, arch), members in groups.items():
        batches = sorted({m.batch for m in members})
        left = sum(results[m] is None for m in members)
        lines.append(f"  {design:9s} {arch:18s} batches {','.join(map(str, batches)):14s} "
                     f"{len(members) - left}/{len(members)} done")
    head = f"plan{task}: {len(runs)} runs"
    if len(runs) != len(all_runs):
        head += f" (of {len(all_runs)} in the whole sweep)"
    lines.insert(0, f"{head}: {len(done)} done ({len(failed)} failed), {len(todo)} to do")
    # Finished runs anywhere in the sweep inform the estimate, not only this task's.
    finished = collect(logdir)
    seconds = estimate_seconds(finished, todo)
    if not todo:
        lines.append("estimate: nothing to do")
    elif seconds is None:
        lines.append("estimate: none yet (no finished runs to time)")
    else:
        lines.append(f"estimate: {format_duration(seconds)} of training for the {len(todo)} runs to do "
                     f"(from the wall time of {len(finished)} finished runs; add about 10 s of start-up each)")
    return lines


def train_command(run: Run, data_dir, logdir, folds: int, passthrough: Sequence[str]) -> List[str]:
    """The `python -m octtl.train` command line of one run; the run's own flags come last and win."""
    return [sys.executable, "-m", "octtl.train", *passthrough, f"--data_dir={data_dir}", f"--logdir={logdir}",
            f"--folds={folds}", f"--design={run.design}", f"--arch={run.arch}", f"--batch={run.batch}",
            f"--fold={run.fold}"]


def log_path(logdir, run: Run) -> pathlib.Path:
    """Where a run's console output goes: outside its folder, which octtl.train empties on a restart."""
    return pathlib.Path(logdir) / LOGS / run.design / run.arch / f"batch{run.batch}" / f"fold{run.fold}.log"


def summary(result: dict) -> str:
    """A finished run in a few words."""
    if result.get("status") != "ok":
        return f"FAILED: {result.get('error')}"
    auc = "n/a" if result.get("best_auc") is None else f"{result['best_auc']:.4f}"
    return (f"accuracy {result['best_accuracy']:.4f}, AUC {auc}, iterations to best "
            f"{result['iterations_to_best']} of {result['iterations']}")


def _tail(path, lines=15) -> str:
    try:
        text = pathlib.Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


@contextlib.contextmanager
def claimed(logdir, run: Run):
    """Yields whether this process holds the run's lock (LOGDIR/logs/.../fold{fold}.lock), held until exit.

    Two sweeps given the same runs (a task started twice, a requeued job whose first copy still runs) then
    never train one run at the same time. The kernel drops the lock when its holder dies, even by SIGKILL, so
    a killed sweep leaves nothing stale behind.
    """
    path = log_path(logdir, run).with_suffix(".lock")
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


def execute(run: Run, command: Sequence[str], logdir) -> int:
    """Runs one training process, its output appended to the run's log; returns its exit status.

    Each attempt starts with a header line (time, host, pid, command), so the log counts the attempts. An
    interrupt or termination of the sweep stops the child before the sweep exits.
    """
    path = log_path(logdir, run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as log:
        header = (f"=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} host {socket.gethostname()} "
                  f"sweep pid {os.getpid()}: {' '.join(command)}\n")
        log.write(header.encode())
        log.flush()
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            return child.wait()
        except BaseException:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
            raise


def sweep(runs: Sequence[Run], logdir, command_for: Callable[[Run], List[str]],
          say: Callable[[str], None] = print) -> dict:
    """Trains every run of `runs` without a result.json, one process each, recording each result.

    Results of this task's runs that finished before but are missing from results.jsonl (a sweep killed
    between a run's end and its line) are recorded first. A run another sweep is training (its lock is held)
    is left to that sweep.

    Args:
        runs: This task's runs.
        logdir: Root of the run folders.
        command_for: The command line of a run.
        say: Where progress lines go.

    Returns:
        Counts: planned, skipped (done before), ran, failed (status failed), crashed (no result.json), busy
        (trained elsewhere), and `problems`, the runs without an ok result at the end.
    """
    record(logdir, [r for r in (read_result(run.folder(logdir) / RESULT) for run in runs) if r is not None])
    counts = {"planned": len(runs), "skipped": 0, "ran": 0, "failed": 0, "crashed": 0, "busy": 0, "problems": []}
    crashes_in_a_row = 0
    for number, run in enumerate(runs, 1):
        step = f"sweep: [{number}/{len(runs)}] {run}"
        result = read_result(run.folder(logdir) / RESULT)
        if result is not None:
            counts["skipped"] += 1
        else:
            with claimed(logdir, run) as mine:
                if not mine:
                    counts["busy"] += 1
                    counts["problems"].append(f"{run}: being trained by another sweep")
                    say(f"{step}: being trained by another sweep; left to it")
                    continue
                # Read again under the lock: another sweep may have finished the run a moment ago.
                result = read_result(run.folder(logdir) / RESULT)
                if result is None:
                    result = _attempt(run, step, logdir, command_for(run), counts, say)
                else:
                    counts["skipped"] += 1
            if result is None:
                crashes_in_a_row += 1
                if crashes_in_a_row >= CRASHES_BEFORE_STOP:
                    say(f"sweep: {CRASHES_BEFORE_STOP} runs in a row ended without a result; stopping")
                    break
                continue
            crashes_in_a_row = 0
        if result.get("status") != "ok":
            counts["problems"].append(f"{run}: {summary(result)}")
    return counts


def _attempt(run: Run, step: str, logdir, command: List[str], counts: dict, say) -> Optional[dict]:
    """Trains one run and records its result; returns it, or None when the process left no result."""
    started = time.time()
    say(f"{step}: training (log {log_path(logdir, run)})")
    status = execute(run, command, logdir)
    counts["ran"] += 1
    result = read_result(run.folder(logdir) / RESULT)
    if result is None:
        counts["crashed"] += 1
        counts["problems"].append(f"{run}: exited with status {status} and no result")
        say(f"{step}: exited with status {status} and no result; its log ends:\n{_tail(log_path(logdir, run))}")
        return None
    record(logdir, [result])
    counts["failed"] += result.get("status") != "ok"
    say(f"{step}: {summary(result)} ({format_duration(time.time() - started)})")
    return result
