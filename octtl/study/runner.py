"""The study's runs executed in groups: one worker process per network x batch x variant.

Runs that share everything a training session holds (the network and batch size, the variant's learning rate,
augmentation and denoising; input size, weights, scaling and precision are the sweep's own) form a group
(octtl.study.plan.groups), and one worker process (octtl.study.worker) trains a whole group in one session:
records decoded once, network built and compiled once, every (design, fold) run of the group on it, each
exactly as a fresh `octtl.train` would.

The run folders are the truth: a run is done when its result.json exists and records the plan's configuration;
a worker claims a run with a lock on LOGDIR/logs/.../fold{fold}.lock (the kernel drops it when its holder dies,
even by SIGKILL), so two sweeps never train one run, and a killed sweep resumes by training the runs without a
result. Workers die with their sweep. This module imports neither TensorFlow nor Keras.
"""

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
from typing import Callable, Dict, List, Sequence

from octtl import console, outputs, runs
from octtl.runs import Run
from octtl.study.plan import format_duration

CRASHES_BEFORE_STOP = 3


def claimed(logdir, run: Run):
    """Whether this process holds the run's lock (runs.Run.lock), held until the block ends or the process exits.

    Two sweeps given the same runs (a task started twice, a requeued job whose first copy still runs), or a sweep
    and octtl.train, then never train one run at the same time.
    """
    return outputs.exclusive(run.lock(logdir))


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


class _Tally:
    """What the sweep counts as its workers report, under one lock; the console lines go out under it too."""

    def __init__(self, groups_: Dict[tuple, List[Run]], say: Callable[[str], None]):
        self.lock = threading.Lock()
        self.numbering = {run: k for k, run in enumerate((r for g in groups_.values() for r in g), 1)}
        self.planned = len(self.numbering)
        self.counts = {"planned": self.planned, "skipped": 0, "stale": 0, "ran": 0, "failed": 0, "crashed": 0,
                       "busy": 0, "problems": []}
        self._say = say

    def say(self, line: str):
        """One console line, never interleaved with another worker's."""
        with self.lock:
            self._say(line)

    def missing(self, run: Run, code: int):
        """A run the worker never reported: it died first."""
        with self.lock:
            self.counts["crashed"] += 1
            self.counts["problems"].append(f"{run}: the worker exited with status {code} before it")


def sweep(groups_: Dict[tuple, List[Run]], logdir, spec: Callable[[List[Run]], dict], workers: int = 1,
          gpus: Sequence[str] = (), say: Callable[[str], None] = print) -> dict:
    """Trains every group's runs, one worker process per group and up to `workers` at once.

    Args:
        groups_: Runs by (arch, batch, variant), as octtl.study.plan.groups makes them.
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
    tally = _Tally(groups_, say)
    pending = list(groups_.items())
    slots = list(gpus) if gpus else [None] * max(1, workers)
    stop = threading.Event()

    def worker_loop(gpu):
        while not stop.is_set():
            with tally.lock:
                if not pending:
                    return
                key, members = pending.pop(0)
            crashed = _run_group(key, members, logdir, spec(members), gpu, tally)
            if crashed >= CRASHES_BEFORE_STOP:
                tally.say(f"sweep: {console.count(crashed, 'run')} of {_group_words(key)} ended without a result; "
                          "stopping")
                stop.set()

    threads = [threading.Thread(target=worker_loop, args=(gpu,), daemon=True) for gpu in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)  # short waits keep the main thread responsive to signals
    return tally.counts


def _run_group(key, members, logdir, job, gpu, tally: _Tally) -> int:
    """Runs one worker on one group; relays its status lines; returns how many runs ended without a result.

    One piece: the worker process, its status pipe and its spec file live and die together (every path out,
    an exception included, stops the worker and closes both)."""
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
                    _count(event, run, logdir, tally)
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
        tally.missing(run, code)
    if missing:
        tally.say(f"sweep: worker for {_group_words(key)} exited with status {code} after "
                  f"{format_duration(time.time() - started)}, {console.count(len(missing), 'run')} left; its log "
                  f"ends:\n{_tail(log)}")
    return len(missing)


def _group_words(key) -> str:
    return " ".join([key[0], f"batch {key[1]}", *[k for k in key[2:] if k]])


def _count(event, run, logdir, tally: _Tally):
    """Counts one worker event and says it on the console."""
    counts, report = tally.counts, tally.say
    step = f"sweep: [{tally.numbering[run]}/{tally.planned}] {run}"
    kind = event["event"]
    with tally.lock:
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
        step += f" (test vendor {result['test_vendor']})" if result.get("test_vendor") else ""  # the vendor design
        report(f"{step}: {words} ({format_duration(result.get('wall_seconds', 0))}; log {run.log(logdir)})")
    elif kind == "busy":
        report(f"{step}: being trained by another sweep; left to it")
    elif kind == "stale":
        report(f"{step}: stale ({event['message']}); left as it is (--overwrite redoes it)")
    else:
        report(f"{step}: {event['message']}")


