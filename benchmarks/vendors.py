r"""Another scanner: what a network trained on two vendors loses on the third, against within-vendor folds.

  python benchmarks/vendors.py [--volumes=12] [--bscans=24] [--image_size=96] [--workdir=DIR]

Synthetic volumes of the three RETOUCH vendors (octtl.synthetic.render.VENDORS: each vendor's rows, columns,
pixel spacing, bit depth and speckle; the anatomy, fluid and grey levels are drawn from the same distributions
for all three, and every volume gets --bscans B-scans to keep the run short), converted together. The demo's
settings (squeezenet from its ImageNet weights, whole B-scans resized, batch 16, the paper's protocol) train:
  * the baseline design, 5 folds grouped by volume with a held-out test fold: every vendor trains, and each fold's
    test volumes are scored per vendor (within-vendor: the vendor's other volumes were in training);
  * the vendor design: each vendor in turn is left out and tests, the other two train and validate.
Both go through the report (octtl.results.vendors): its vendors.csv is printed as a table, accuracy and AUC side by
side, with the left-out vendor's 95% bootstrap interval over its volumes.
"""

import csv
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

_VOLUMES = flags.DEFINE_integer("volumes", 12, "Synthetic volumes per vendor.")
_BSCANS = flags.DEFINE_integer("bscans", 24, "B-scans per volume (every vendor).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 96, "Input side (whole B-scans resized).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the volumes, records, runs and report go (default: a temp dir).")
VENDORS = ("cirrus", "spectralis", "topcon")


def _number(row, key, low=None, high=None) -> str:
    if not row.get(key):
        return "-"
    text = f"{float(row[key]):.3f}"
    if low and row.get(low):
        text += f" [{float(row[low]):.2f}, {float(row[high]):.2f}]"
    return text


def _change(row, key) -> str:
    return f"{float(row[key]):+.3f}" if row.get(key) else "-"


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    from octtl import runs
    from octtl.data import converter
    from octtl.results import page
    from octtl.synthetic import render
    from octtl.training import session
    from octtl.training.config import Config

    work = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="octtl-vendors-"))
    if not (work / "records").is_dir():
        for vendor in VENDORS:
            render.write_dataset(work / "volumes", vendor=vendor, volumes=_VOLUMES.value, bscans=_BSCANS.value,
                                 seed=0)
        converter.convert(work / "volumes", work / "records", progress=None)
    config = Config(data_dir=str(work / "records"), logdir=str(work / "runs"), arch="squeezenet", batch=16, folds=5,
                    weights="imagenet", image_size=_IMAGE_SIZE.value, crop="resize", save_model=False)
    trainer = session.Session(config, say=lambda line: None, progress=False)
    seconds = {}
    for design in ("baseline", "vendor"):
        started = time.time()
        for fold in range(trainer.design_folds(design)):
            result = trainer.run(design, fold)
            print(f"  {runs.summary_line(result)}", file=sys.stderr, flush=True)
        seconds[design] = time.time() - started
    page.write_report(runs.collect(work / "runs"), work / "report", str(work / "runs"), logdir=work / "runs",
                      overwrite=True)
    with open(work / "report" / "vendors.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lines = ["| left-out vendor (trained on) | test B-scans (volumes) | accuracy within | accuracy left out [95% CI] "
             "| change | AUC within | AUC left out [95% CI] | change | sensitivity / specificity left out (target "
             "0.95) | ECE left out (after T) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['vendor']} ({r['train_vendors'].replace('+', ', ')}) | {r['n_test']} ({r['n_volumes']}) | "
            f"{_number(r, 'within_accuracy')} | {_number(r, 'accuracy', 'accuracy_ci_low', 'accuracy_ci_high')} | "
            f"{_change(r, 'accuracy_change')} | {_number(r, 'within_auc')} | "
            f"{_number(r, 'auc', 'auc_ci_low', 'auc_ci_high')} | {_change(r, 'auc_change')} | "
            f"{_number(r, 'sensitivity')} / {_number(r, 'specificity')} | "
            f"{_number(r, 'ece')} ({_number(r, 'ece_calibrated')}) |")
    changes = {key: [float(r[key]) for r in rows if r.get(key)] for key in ("accuracy_change", "auc_change")}
    print("\n".join(lines))
    print(f"\nMean change over vendors: accuracy {statistics.fmean(changes['accuracy_change']):+.3f}, AUC "
          f"{statistics.fmean(changes['auc_change']):+.3f}. Within: the baseline design's 5 grouped folds, each "
          "fold's test volumes of that vendor (mean over the folds that held one). Wall time: baseline "
          f"{seconds['baseline']:.0f} s, vendor design {seconds['vendor']:.0f} s. Report: {work / 'report'}")


if __name__ == "__main__":
    app.run(main)
