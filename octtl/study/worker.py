"""A sweep's worker process: trains one group of runs (one network at one batch size) in one training session.

  python -m octtl.study.worker SPEC.json      (started by octtl.study.runner, not by hand)

SPEC holds `config` (octtl.training.config.Config's fields), `runs` ([design, arch, batch, fold, variant] each), `redo_stale`
and `status_fd`, a pipe to the sweep. For each run the worker takes the run's lock, skips it when it is done,
writes everything the run prints (TensorFlow's lines too) to the run's log, trains it, appends its result to
LOGDIR/results.jsonl and sends one JSON status line to the sweep.
"""

import contextlib
import json
import os
import socket
import sys
import time


@contextlib.contextmanager
def _output_to(path):
    """Points file descriptors 1 and 2 at `path` (appending): Python's, TensorFlow's and Keras' output alike."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def run_spec(spec: dict):
    """Trains the spec's runs; each one's outcome goes to the status pipe as one JSON line."""
    from octtl import runs
    from octtl.training.config import Config

    config = Config(**spec["config"])  # a bad job fails here, before seconds of TensorFlow import
    from octtl import console

    console.start_backend()
    from octtl.nets import devices
    from octtl.study import runner
    from octtl.training import session
    from octtl.errors import InputError, WeightsError

    status = os.fdopen(spec["status_fd"], "w", buffering=1)

    def send(run, event, **fields):
        status.write(json.dumps({"run": [run.design, run.arch, run.batch, run.fold, run.variant], "event": event,
                                 **fields})
                     + "\n")

    devices.configure(config.mixed_precision)
    say = lambda line: print(line, flush=True)  # noqa: E731  (into the current run's log)
    trainer = session.Session(config, say=say, progress=False, redo_stale=spec["redo_stale"], lock=False)
    mine_variant = runs.session_variant(config.variant_name)
    for design, arch, batch, fold, variant in spec["runs"]:
        run = runs.Run(design, arch, batch, fold, variant)
        if runs.session_variant(variant) != mine_variant:
            raise ValueError(f"{run}: not the variant of this worker's settings ({mine_variant or 'default'})")
        # A learning-curve point's volumes and repeat are the run's own; everything else is the session's.
        point = {key: runs.parse_variant(variant)[key] for key in runs.PER_RUN} if variant else {}
        with runner.claimed(config.logdir, run) as mine:
            if not mine:
                send(run, "busy")
                continue
            with _output_to(run.log(config.logdir)):
                # Read again under the lock: another sweep may have finished the run a moment ago.
                done = trainer.finished(design, fold, **point)
                if done is None:
                    print(f"=== start {time.strftime('%Y-%m-%dT%H:%M:%S')} host {socket.gethostname()} worker pid "
                          f"{os.getpid()}: {run}", flush=True)
                    try:
                        result = trainer.run(design, fold, **point)
                    except (InputError, WeightsError) as e:
                        print(f"error: {e}", flush=True)
                        send(run, "error", message=str(e))
                        continue
                    print(runs.summary_line(result), flush=True)
            if done is not None:
                send(run, "stale" if done.get("stale") else "skipped", message=done.get("stale"))
                continue
            runs.record(config.logdir, [runs.result_of(config.logdir, run)])
            send(run, "done", result={k: v for k, v in result.items() if k not in ("checks", "run_dir")})


def main(argv):
    """Runs the group of runs that SPEC.json (argv[1]) describes; started by the sweep."""
    if len(argv) != 2:
        sys.exit("usage: python -m octtl.study.worker SPEC.json (started by octtl.sweep)")
    with open(argv[1]) as f:
        spec = json.load(f)
    run_spec(spec)


if __name__ == "__main__":
    main(sys.argv)
