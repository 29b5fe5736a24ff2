r"""Runs one small synthetic study with two revisions of octtl and compares what they wrote, byte for byte.

  python tools/compare_revisions.py --before=a550814 [--after=WORKTREE] [--workdir=/tmp/octtl-compare]

Each revision is checked out into its own folder (`git worktree`; WORKTREE means this checkout as it is, edits
included) and runs, through its own command line, the same study on the same synthetic volumes: convert them,
train one run, sweep two networks over both designs and five folds, report, predict held-out volumes and export
the model. Then every metric of every result.json, every predictions.csv, every CSV of the report (the columns
both revisions write, timings aside; columns the later one adds are named), predict's CSVs, the records (as parsed examples: protobuf writes map fields in no fixed order)
and the exported SavedModel's outputs are compared; the differences are listed and the exit status is 1 when
there is one. A restructuring that changes no behaviour shows none. Both revisions run on
this machine, one after the other (a few minutes each on 2 cores).
"""

import csv
import filecmp
import json
import os
import pathlib
import shutil
import subprocess
import sys

from absl import app, flags

_BEFORE = flags.DEFINE_string("before", None, "The revision to compare against (a commit, branch or tag).")
_AFTER = flags.DEFINE_string("after", "WORKTREE", "The other revision; WORKTREE: this checkout with its edits.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/octtl-compare", "Scratch folder (emptied first).")
_AFTER_FLAGS = flags.DEFINE_list("after_flags", [], "Flags only the later revision's train and sweep take, e.g. "
                                 "--after_flags=--test_fold=none to check that a new setting's old value "
                                 "reproduces the earlier revision.")
REPO = pathlib.Path(__file__).resolve().parents[1]
# What a run's result.json says about its training; timings and paths differ between any two runs.
METRICS = ("status", "best_accuracy", "best_auc", "iterations_to_best", "iterations", "epochs", "early_stopped",
           "checks", "train_size", "val_size", "majority_rate", "params", "weights", "preprocess",
           "weights_scaling", "image_size", "crop", "folds")
# What differs between any two conversions of the same volumes: where they were written, and when.
VOLATILE_MANIFEST = ("flags", "created", "input_dir")
TRAIN = ["--arch=squeezenet", "--batch=8", "--image_size=64", "--folds=5", "--max_epochs=2", "--crop=resize",
         "--group_by_volume"]
SWEEP = ["--archs=squeezenet,resnet18", "--batches=8", "--designs=baseline,limited", "--image_size=48",
         "--folds=5", "--max_epochs=1", "--weights=none", "--group_by_volume"]


def checkout(revision: str, folder: pathlib.Path) -> pathlib.Path:
    """The source tree of `revision` in `folder` (WORKTREE: a copy of this checkout's tracked and new files)."""
    if revision == "WORKTREE":
        files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.split()
        for name in files:
            if (REPO / name).is_file():
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, folder / name)
        return folder
    subprocess.run(["git", "worktree", "add", "--detach", "-f", str(folder), revision], cwd=REPO, check=True,
                   capture_output=True)
    return folder


def run_study(source: pathlib.Path, volumes: pathlib.Path, heldout: pathlib.Path, out: pathlib.Path,
              extra=()):
    """The study, every command started from `source` (so its octtl, not the installed one, runs)."""
    env = dict(os.environ, PYTHONPATH=str(source), OCTTL_VERBOSE="0", TF_CPP_MIN_LOG_LEVEL="2")

    def octtl(command, *args):
        proc = subprocess.run([sys.executable, "-m", f"octtl.{command}", *map(str, args)], cwd=source, env=env,
                              capture_output=True, text=True)
        (out / "console").mkdir(parents=True, exist_ok=True)
        with open(out / "console" / f"{command}.txt", "a") as log:
            log.write(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"{source}: octtl.{command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    octtl("to_tfrecord", f"--input_dir={volumes}", f"--output_dir={out / 'records'}")
    octtl("train", f"--data_dir={out / 'records'}", f"--logdir={out / 'runs'}", *TRAIN, *extra)
    octtl("sweep", f"--data_dir={out / 'records'}", f"--logdir={out / 'study'}", *SWEEP, *extra)
    octtl("report", f"--logdir={out / 'study'}", f"--out_dir={out / 'report'}")
    model = next((out / "runs").rglob("best.keras"))
    octtl("predict", f"--model={model}", f"--input={heldout}", f"--output={out / 'predictions.csv'}")
    octtl("export", f"--model={model}", f"--output={out / 'export'}")


def compare(a: pathlib.Path, b: pathlib.Path) -> list:
    """Every difference between two studies' outputs, in words."""
    differences = []
    results_a = {p.relative_to(a): json.loads(p.read_text()) for p in a.rglob("result.json")}
    results_b = {p.relative_to(b): json.loads(p.read_text()) for p in b.rglob("result.json")}
    if set(results_a) != set(results_b):
        differences.append(f"run folders differ: {sorted(map(str, set(results_a) ^ set(results_b)))}")
    for path in sorted(set(results_a) & set(results_b)):
        for key in METRICS:
            if results_a[path].get(key) != results_b[path].get(key):
                differences.append(f"{path}: {key} {results_a[path].get(key)!r} != {results_b[path].get(key)!r}")
        if results_a[path]["data"]["num_examples"] != results_b[path]["data"]["num_examples"]:
            differences.append(f"{path}: data differs")
    manifests = [{k: v for k, v in json.loads((s / "records" / "manifest.json").read_text()).items()
                  if k not in VOLATILE_MANIFEST} for s in (a, b)]
    if manifests[0] != manifests[1]:
        differences.append("records/manifest.json: differs (beyond where and when it was written)")
    compared = 0
    for pattern in ("*.csv", "*.md", "*.tfrecord"):
        for path in sorted(p.relative_to(a) for p in a.rglob(pattern) if "console" not in p.parts):
            other = b / path
            compared += 1
            if not other.exists():
                differences.append(f"{path}: only in the first study")
            elif pattern == "*.tfrecord":
                if _examples(a / path) != _examples(other):
                    differences.append(f"{path}: its examples differ")
            elif filecmp.cmp(a / path, other, shallow=False):
                continue
            elif pattern == "*.csv":
                old, new = _rows(a / path), _rows(other)
                common = [c for c in (old[0] if old else {}) if c in (new[0] if new else {})]
                added = sorted(set(new[0] if new else {}) - set(old[0] if old else {}))
                if added:
                    print(f"compare: {path}: the later revision adds columns {', '.join(added)}")
                if [{c: r[c] for c in common} for r in old] != [{c: r[c] for c in common} for r in new]:
                    differences.append(f"{path}: its common columns differ (timings aside)")
            else:
                differences.append(f"{path}: bytes differ")
    differences += _compare_exports(a / "export", b / "export")
    print(f"compare: {len(results_a)} results, {compared} CSV/Markdown/TFRecord files, the SavedModels' outputs")
    return differences


def _examples(path) -> list:
    """A shard's examples, parsed: protobuf writes map fields in no fixed order, so equal examples can differ in
    bytes between two processes."""
    from octtl import console

    console.start_tensorflow()
    import tensorflow as tf

    return [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def _rows(path) -> list:
    """A CSV's rows without its timing columns (wall seconds differ between any two runs)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(f)]


def _compare_exports(a: pathlib.Path, b: pathlib.Path) -> list:
    import numpy as np

    from octtl import console

    console.start_tensorflow()
    import tensorflow as tf

    bscans = tf.constant(np.random.default_rng(0).integers(0, 256, (3, 128, 160), dtype=np.uint8))
    outputs = [tf.saved_model.load(str(path)).signatures["serving_default"](bscans=bscans) for path in (a, b)]
    if sorted(outputs[0]) != sorted(outputs[1]):
        return [f"export: outputs {sorted(outputs[0])} != {sorted(outputs[1])}"]
    return [f"export: {key} differs" for key in outputs[0]
            if not np.array_equal(outputs[0][key].numpy(), outputs[1][key].numpy())]


def main(argv):
    """Checks out both revisions, runs the study with each, and lists what differs."""
    del argv
    if not _BEFORE.value:
        raise SystemExit("compare_revisions: error: --before required")
    work = pathlib.Path(_WORKDIR.value)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), OCTTL_VERBOSE="0")
    for name, seed, count in (("volumes", 5, 10), ("heldout", 11, 3)):
        subprocess.run([sys.executable, "-m", "octtl.make_synthetic", f"--output_dir={work / name}", f"--seed={seed}",
                        f"--volumes={count}", "--bscans=12", "--height=96", "--width=128"], check=True, env=env,
                       capture_output=True)
    studies = []
    for label, revision in (("before", _BEFORE.value), ("after", _AFTER.value)):
        source = checkout(revision, work / f"source-{label}")
        print(f"compare: {label} = {revision}: running the study ...", flush=True)
        run_study(source, work / "volumes", work / "heldout", work / label,
                  _AFTER_FLAGS.value if label == "after" else ())
        studies.append(work / label)
    differences = compare(*studies)
    for line in differences:
        print(f"  {line}")
    print(f"compare: {len(differences)} difference(s) between {_BEFORE.value} and {_AFTER.value}")
    if _BEFORE.value != "WORKTREE":
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "source-before")], cwd=REPO,
                       capture_output=True)
    if _AFTER.value != "WORKTREE":
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "source-after")], cwd=REPO,
                       capture_output=True)
    if differences:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
