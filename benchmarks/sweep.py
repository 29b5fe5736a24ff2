r"""The study engine against one process per run: the same mini-sweep both ways, side by side in one run.

  python benchmarks/sweep.py [--archs=squeezenet,resnet18] [--batch=16] [--image_size=64] [--folds=5]

Both sides train every run of the plan (networks x one batch x both designs x folds, one epoch) on the same
synthetic records (12 volumes of 10 B-scans, 96 x 96):
  (a) one `python -m octtl.train --fold=K` process per run, as the sweep ran them before;
  (b) one `python -m octtl.sweep` call: one worker session per network (records decoded once, network built and
      compiled once, every run on it).
Prints wall time, the fixed cost per run (wall time not spent inside a run: imports, decoding, building,
compiling), the speedup, and whether every run's metrics and predictions.csv are identical on both sides.
"""

import os
import pathlib
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_ARCHS = flags.DEFINE_list("archs", ["squeezenet", "resnet18"], "Networks of the mini-sweep.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Input side.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Folds (both designs, every fold).")


def main(argv):
    del argv
    from octtl import runs
    from octtl.data import converter
    from octtl.study import runner
    from octtl.synthetic import render

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-bench-sweep-"))
    render.write_dataset(work / "volumes", volumes=12, bscans=10, height=96, width=96, seed=3)
    converter.convert(work / "volumes", work / "records", progress=None)
    common = [f"--data_dir={work / 'records'}", f"--image_size={_IMAGE_SIZE.value}", f"--folds={_FOLDS.value}",
              "--max_epochs=1", "--weights=none"]
    plan = runner.plan(["baseline", "limited"], _ARCHS.value, {a: [_BATCH.value] for a in _ARCHS.value},
                         _FOLDS.value)
    env = dict(os.environ, OCTTL_VERBOSE="0")

    started = time.perf_counter()
    for run in plan:
        subprocess.run([sys.executable, "-m", "octtl.train", *common, f"--logdir={work / 'a'}",
                        f"--arch={run.arch}", f"--batch={run.batch}", f"--design={run.design}",
                        f"--fold={run.fold}", "--save_model=false"], check=True, env=env, capture_output=True)
    processes = time.perf_counter() - started

    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "octtl.sweep", *common, f"--logdir={work / 'b'}",
                    f"--archs={','.join(_ARCHS.value)}", f"--batches={_BATCH.value}", "--designs=baseline,limited"],
                   check=True, env=env, capture_output=True)
    sessions = time.perf_counter() - started

    a = {run: runs.result_of(work / "a", run) for run in plan}
    b = {run: runs.result_of(work / "b", run) for run in plan}
    keys = ("best_accuracy", "best_auc", "iterations_to_best", "iterations", "checks")
    same_metrics = all(a[r][k] == b[r][k] for r in plan for k in keys)
    same_predictions = all((r.folder(work / "a") / runs.PREDICTIONS).read_bytes()
                           == (r.folder(work / "b") / runs.PREDICTIONS).read_bytes() for r in plan)
    n = len(plan)
    inside = {side: sum(res[r]["wall_seconds"] for r in plan) for side, res in (("a", a), ("b", b))}
    print(f"\n{n} runs: {', '.join(_ARCHS.value)} x batch {_BATCH.value} x 2 designs x {_FOLDS.value} folds, "
          f"{_IMAGE_SIZE.value} px, 1 epoch, {os.cpu_count()} CPU cores")
    print(f"| {'execution':<44} | {'wall s':>7} | {'in runs s':>9} | {'fixed s per run':>15} |")
    print(f"|{'-' * 46}|{'-' * 9}|{'-' * 11}|{'-' * 17}|")
    print(f"| {'(a) one octtl.train process per run':<44} | {processes:>7.1f} | {inside['a']:>9.1f} | "
          f"{(processes - inside['a']) / n:>15.2f} |")
    print(f"| {'(b) octtl.sweep: one session per network':<44} | {sessions:>7.1f} | {inside['b']:>9.1f} | "
          f"{(sessions - inside['b']) / n:>15.2f} |")
    print(f"\nspeedup {processes / sessions:.2f}x (target >= 1.7x); (b) takes {sessions / processes:.2f} of (a)'s "
          f"wall time; metrics identical: {same_metrics}; predictions.csv identical: {same_predictions}")
    print(f"(runs in {work})")


if __name__ == "__main__":
    app.run(main)
