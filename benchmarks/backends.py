r"""The same small study on every installed Keras backend, side by side in one run: time, images/s and metrics.

  python benchmarks/backends.py [--backends=tensorflow,jax,torch] [--archs=squeezenet,mobilenetv2]
      [--real_dir=../shared/data/oct2017-dev] [--folds=5] [--image_size=96] [--max_epochs=3]
  python benchmarks/backends.py --gpu_only --backends=jax,torch   # a GPU machine without TensorFlow

The data are converted once (without TensorFlow): 12 synthetic volumes of 49 B-scans and, where --real_dir
holds it, the real dev set's NORMAL vs DME (patients as groups). Each backend then runs the same sweep in its
own process (python -m octtl.sweep with KERAS_BACKEND set, one worker, a fresh log folder and, for JAX, a fresh
compilation cache, so its compile time is counted): every --archs network from its ImageNet weights where it
has some, batch 16, grouped folds with a held-out test fold. Printed:
  * per backend and network: the sweep's wall seconds, training images/s (result.json's, evaluation excluded;
    mean over folds), and the mean validation and test accuracy and AUC over folds;
  * the ratios of wall time and images/s to the first backend, and the largest per-fold differences in test
    AUC and accuracy between backends (the same folds, the same seeds; the batches' order and the random draws
    are each backend's).
With --gpu_only, the session engine's fixed cost per run (decode, build, compile, first check) and training
images/s per network at native input size on the GPU, from the same sweep on synthetic data.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_BACKENDS = flags.DEFINE_list("backends", ["tensorflow", "jax", "torch"], "Keras backends, each if installed.")
_ARCHS = flags.DEFINE_list("archs", ["squeezenet", "mobilenetv2"], "Networks of the sweep.")
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs; skipped where absent.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Folds of each sweep (every one is trained).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Input size (whole B-scans resized); 0: each network's native.")
_MAX_EPOCHS = flags.DEFINE_integer("max_epochs", 3, "Epochs at most per run.")
_BATCH = flags.DEFINE_integer("batch", 16, "Batch size.")
_GPU_ONLY = flags.DEFINE_bool("gpu_only", False, "Only the GPU table (native sizes, synthetic data).")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"


def installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def sweep(backend: str, records_dir: pathlib.Path, logdir: pathlib.Path, image_size: int) -> float:
    """One backend's sweep in its own process; returns its wall seconds."""
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONUNBUFFERED="1",
               KERAS_HOME=str(logdir.parent / f"keras-{backend}"))  # a cold JAX compilation cache per backend
    args = [sys.executable, "-m", "octtl.sweep", f"--data_dir={records_dir}", f"--logdir={logdir}",
            f"--archs={','.join(_ARCHS.value)}", f"--batches={_BATCH.value}", "--designs=baseline",
            f"--folds={_FOLDS.value}", f"--max_epochs={_MAX_EPOCHS.value}", "--workers=1", "--crop=resize"]
    if image_size:
        args.append(f"--image_size={image_size}")
    started = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{backend}: the sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def results(logdir: pathlib.Path, arch: str) -> list:
    paths = sorted(logdir.glob(f"baseline/{arch}/batch*/fold*/result.json"), key=lambda p: int(p.parent.name[4:]))
    return [json.loads(p.read_text()) for p in paths]


def mean(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else float("nan")


def study_table(name: str, records_dir: pathlib.Path, work: pathlib.Path, backends: list):
    seconds, found = {}, {}
    for backend in backends:
        logdir = work / name / backend
        seconds[backend] = sweep(backend, records_dir, logdir, _IMAGE_SIZE.value)
        found[backend] = {arch: results(logdir, arch) for arch in _ARCHS.value}
        print(f"  {name}, {backend}: {seconds[backend]:.0f} s", file=sys.stderr, flush=True)
    first = backends[0]
    print(f"\n{name}: {len(_ARCHS.value)} networks x {_FOLDS.value} folds, {_IMAGE_SIZE.value or 'native'} px, batch "
          f"{_BATCH.value}, up to {_MAX_EPOCHS.value} epochs (sweep wall time for all networks)")
    print("| network | backend | sweep s | x first | train img/s | x first | val acc | val AUC | test acc | test AUC |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch in _ARCHS.value:
        speed = {b: mean(r["train_images_per_second"] for r in found[b][arch]) for b in backends}
        for backend in backends:
            rs = found[backend][arch]
            print(f"| {arch} | {backend} | {seconds[backend]:.0f} | {seconds[backend] / seconds[first]:.2f} | "
                  f"{speed[backend]:.1f} | {speed[backend] / speed[first]:.2f} | "
                  f"{mean(r['best_accuracy'] for r in rs):.3f} | {mean(r['best_auc'] for r in rs):.3f} | "
                  f"{mean(r.get('test_accuracy') for r in rs):.3f} | {mean(r.get('test_auc') for r in rs):.3f} |")
    print("\nLargest per-fold difference from the first backend (same folds and seeds):")
    print("| network | backend | test AUC | test accuracy | validation accuracy |\n|---|---|---:|---:|---:|")
    for arch in _ARCHS.value:
        for backend in backends[1:]:
            pairs = list(zip(found[first][arch], found[backend][arch]))
            worst = {key: max((abs((a.get(key) or 0) - (b.get(key) or 0)) for a, b in pairs), default=float("nan"))
                     for key in ("test_auc", "test_accuracy", "best_accuracy")}
            print(f"| {arch} | {backend} vs {first} | {worst['test_auc']:.3f} | {worst['test_accuracy']:.3f} | "
                  f"{worst['best_accuracy']:.3f} |")


def gpu_table(records_dir: pathlib.Path, work: pathlib.Path, backends: list):
    print("\nGPU: native input sizes, synthetic data (fixed cost per run = wall time minus training and checks)")
    print("| network | backend | native px | runs | fixed s per run | train img/s |\n|---|---|---:|---:|---:|---:|")
    from octtl.nets import registry

    for backend in backends:
        logdir = work / "gpu" / backend
        seconds = sweep(backend, records_dir, logdir, 0)
        for arch in _ARCHS.value:
            rs = results(logdir, arch)
            fixed = [r["wall_seconds"] - r["iterations"] * r["batch"] / r["train_images_per_second"] for r in rs]
            print(f"| {arch} | {backend} | {registry.get(arch).input_size} | {len(rs)} | {mean(fixed):.1f} | "
                  f"{mean(r['train_images_per_second'] for r in rs):.0f} |")
        print(f"  gpu, {backend}: {seconds:.0f} s", file=sys.stderr, flush=True)


def main(argv):
    del argv
    from octtl.data import converter
    from octtl.synthetic import render

    backends = [b for b in _BACKENDS.value if installed(b)]
    skipped = sorted(set(_BACKENDS.value) - set(backends))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", file=sys.stderr)
    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-backends-"))
    render.write_dataset(work / "volumes", volumes=12, seed=0)
    converter.convert(work / "volumes", work / "synthetic", progress=None)
    if _GPU_ONLY.value:
        gpu_table(work / "synthetic", work, backends)
        return
    study_table("synthetic (12 volumes)", work / "synthetic", work, backends)
    if pathlib.Path(_REAL_DIR.value).is_dir():
        converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                          group_regex=_PATIENT, progress=None)
        study_table("real dev set (NORMAL vs DME)", work / "real", work, backends)


if __name__ == "__main__":
    app.run(main)
