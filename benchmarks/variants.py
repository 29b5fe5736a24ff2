r"""Does the paper's future work help? Augmentation, denoising and a learning rate against the defaults, measured.

  python benchmarks/variants.py [--real_dir=../shared/data/oct2017-dev] [--image_size=96] [--volumes=12]

Squeezenet with its ImageNet weights at a small input size, the paper's protocol, 5 folds, on
  (a) the real dev set (120 Spectralis B-scans, grouped by patient), baseline design;
  (b) synthetic volumes (--volumes of 49 B-scans, 496 x 512), limited design (train on one fold of five);
each as: the defaults, --augment=flip,shift, --denoise=nlm, and --lr=3e-4. Prints, per data set and variant, the
mean accuracy and AUC over folds with the Nadeau-Bengio 95% interval, the paired difference to the defaults with
its Wilcoxon signed-rank p, and the time each costs (training wall time, and denoising's one-off decode).
"""

import pathlib
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Input side.")
_VOLUMES = flags.DEFINE_integer("volumes", 12, "Synthetic volumes (49 B-scans each).")
_FOLDS = 5
VARIANTS = {"default": {}, "augment flip,shift": {"augment": "flip,shift"}, "denoise nlm": {"denoise": "nlm"},
            "lr 3e-4": {"lr": 3e-4}}


def main(argv):
    del argv
    from octtl import console, runs

    console.start_tensorflow()
    from octtl.data import converter
    from octtl.synthetic import render
    from octtl.training import session
    from octtl.training.config import Config
    from octtl.results import variants

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-bench-variants-"))
    converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                    group_regex=r"^[A-Z]+-(\d+)-\d+$", progress=None)
    render.write_dataset(work / "volumes", volumes=_VOLUMES.value, seed=7)
    converter.convert(work / "volumes", work / "synthetic", progress=None)
    sets = {"real dev set (baseline, grouped by patient)": dict(data_dir=work / "real", design="baseline",
                                                               group_by_volume=True),
            f"synthetic, {_VOLUMES.value} volumes (limited)": dict(data_dir=work / "synthetic", design="limited",
                                                                  group_by_volume=False)}
    started_all = time.time()
    for label, where in sets.items():
        results, costs = [], {}
        for name, changes in VARIANTS.items():
            config = Config(data_dir=str(where["data_dir"]), logdir=str(work / "runs" / label[:4]),
                                     arch="squeezenet", batch=16, folds=_FOLDS, image_size=_IMAGE_SIZE.value,
                                     crop="resize", design=where["design"], group_by_volume=where["group_by_volume"],
                                     save_model=False, **changes)
            session = session.Session(config, say=lambda line: None, progress=False)
            started = time.time()
            mine = [session.run(config.design, fold) for fold in range(_FOLDS)]
            costs[name] = (time.time() - started, mine[0].get("decode_seconds", 0.0))
            results += mine
            print(f"  {label}: {name}: accuracy {statistics.fmean(r['best_accuracy'] for r in mine):.3f} "
                  f"({costs[name][0]:.0f} s)", file=sys.stderr, flush=True)
        print(f"\n### {label}: squeezenet, ImageNet weights, {_IMAGE_SIZE.value} px resize, 5 folds, batch 16\n")
        print("| variant | accuracy [95% CI] | vs default (p) | AUC [95% CI] | vs default (p) | wall s (decode s) |")
        print("|---|---|---|---|---|---|")
        rows = {}
        for axis in variants.AXES:
            for row in variants.variant_table(results, axis):
                rows.setdefault(row.variant, row)
        for name, changes in VARIANTS.items():
            key = runs.variant_name(**Config(data_dir="", logdir="", arch="squeezenet", batch=16,
                                                          **changes).variant) or variants.DEFAULT_LABEL
            r = rows[key]
            wall, decode = costs[name]
            print(f"| {name} | {_ci(r.accuracy_mean, r.accuracy_ci_low, r.accuracy_ci_high)} | {_diff(r, 'accuracy')} "
                  f"| {_ci(r.auc_mean, r.auc_ci_low, r.auc_ci_high)} | {_diff(r, 'auc')} | {wall:.0f} ({decode:.1f}) |")
    print(f"\n(all in {time.time() - started_all:.0f} s; runs in {work})")


def _ci(mean, low, high) -> str:
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _diff(row, metric) -> str:
    if row.is_default:
        return "-"
    return f"{getattr(row, metric + '_diff'):+.3f} (p {getattr(row, metric + '_p'):.3f})"


if __name__ == "__main__":
    app.run(main)
