r"""ImageNet transfer on real Spectralis B-scans: input scaling x crop x weights, side by side in one run.

  python benchmarks/real_oct.py [--data_dir=../shared/data/oct2017-dev] [--folds_to_run=0,1,2] [--image_size=227]

Converts the real dev set (60 NORMAL, 60 DME B-scans of Kermany's OCT2017 test split, read in place) with the
patient regex, so folds are grouped by patient, then trains squeezenet with the paper's protocol (baseline
design, 5 folds, batch 16, lr 1e-4, up to 10 epochs) for every combination of --preprocess (paper, backbone),
--crop (resize, center) and --weights (imagenet, none) on the chosen folds, and prints a markdown table of the
mean best validation accuracy, AUC and iterations to best, with the spread over folds.
"""

import pathlib
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_DATA_DIR = flags.DEFINE_string("data_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs.")
_FOLDS_TO_RUN = flags.DEFINE_list("folds_to_run", ["0", "1", "2"], "Folds of the 5-fold baseline design to train.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Input side; default squeezenet's native 227.")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    from octtl.data import converter
    from octtl.training import session
    from octtl.training.config import Config

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-real-oct-"))
    manifest = converter.convert(_DATA_DIR.value, work / "records", input_format="image_folders",
                               classes=["NORMAL", "DME"], group_regex=_PATIENT, progress=None)
    fold_list = [int(f) for f in _FOLDS_TO_RUN.value]
    print(f"{manifest['num_examples']} B-scans of {manifest['num_groups']} patients, folds {fold_list} of 5 "
          "(grouped by patient), squeezenet, batch 16", file=sys.stderr)
    rows = []
    for preprocess in ("paper", "backbone"):
        for crop in ("resize", "center"):
            for weights in ("imagenet", "none"):
                runs = []
                for fold in fold_list:
                    config = Config(
                        data_dir=str(work / "records"), logdir=str(work / "runs" / f"{preprocess}-{crop}-{weights}"),
                        arch="squeezenet", batch=16, folds=5, group_by_volume=True, image_size=_IMAGE_SIZE.value,
                        crop=crop, weights=weights, preprocess=preprocess)
                    started = time.time()
                    result = session.train(config, fold, say=lambda line: None, progress=False)
                    runs.append(result)
                    print(f"  {preprocess} {crop} {weights} fold {fold}: accuracy {result['best_accuracy']:.3f}, "
                          f"AUC {result['best_auc']:.3f} ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
                rows.append((preprocess, crop, weights, runs))
    print("\n| --preprocess | --crop | --weights | best val accuracy | best val AUC | iterations to best |")
    print("|---|---|---|---|---|---|")
    for preprocess, crop, weights, runs in rows:
        print(f"| {preprocess} | {crop} | {weights} | {_cell(runs, 'best_accuracy')} | {_cell(runs, 'best_auc')} | "
              f"{_cell(runs, 'iterations_to_best', 0)} of {_cell(runs, 'iterations', 0)} |")
    print(f"\nmean (min-max) over folds {','.join(map(str, fold_list))}; --weights=none trains from scratch "
          "(its inputs: paper [-1, 1], or the network's registry family with backbone)")


def _cell(runs, key, digits=3):
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "n/a"
    mean = statistics.fmean(values)
    return f"{mean:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


if __name__ == "__main__":
    app.run(main)
