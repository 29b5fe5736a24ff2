r"""Is fine-tuning needed? --trainable=all vs head vs two_phase side by side in one run: accuracy, AUC, wall time.

  python benchmarks/trainable.py [--real_dir=../shared/data/oct2017-dev] [--real_folds=5] [--image_size=227]
      [--synthetic_folds=0,1,2] [--four_classes]

Data, each with patients (or volumes) grouped and a held-out test fold (octtl's defaults):
  * the real dev set's NORMAL vs DME (../shared/data/oct2017-dev, patients as groups), every fold of 5;
  * with --four_classes, its four classes (NORMAL, DME, CNV, DRUSEN) the same way;
  * the default synthetic set (24 volumes of 49 B-scans), folds 0-2 of 10.
squeezenet from its packaged ImageNet weights, whole B-scans resized to --image_size, batch 16, the paper's
protocol (lr 1e-4, the half-epoch early stop), two_phase's second phase at lr 1e-5. Each setting trains in one
session (decoded and built once). Printed per data set and setting: mean (standard deviation) over folds of the
validation and test accuracy and AUC (macro AUC for four classes), training images/s (result.json's, evaluation
excluded) and the session's wall seconds with its ratio to `all`'s; and `head` once more with the backbone run at
every step instead of on its outputs computed once, for the speed-up of the cache (the same numbers within float
tolerance, tests/training/test_trainable.py).
"""

import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

from _cells import mean_sd

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/, DME/ (CNV/, DRUSEN/) of Kermany-named JPEGs; none: skip them.")
_REAL_FOLDS = flags.DEFINE_integer("real_folds", 5, "Folds of the real dev set (every one is trained).")
_SYNTHETIC_FOLDS = flags.DEFINE_list("synthetic_folds", ["0", "1", "2"], "Folds of 10 trained on synthetic data "
                                     "(none: skip the synthetic set).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 227, "Input side (whole B-scans resized); squeezenet's native 227.")
_FOUR = flags.DEFINE_bool("four_classes", False, "Also the real dev set's four classes.")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"
SETTINGS = (("all", None), ("head", None), ("two_phase", None), ("head", False))


def main(argv):
    del argv
    from octtl import console

    console.start_backend()
    from octtl.data import converter
    from octtl.synthetic import render
    from octtl.training import session
    from octtl.training.config import Config

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-trainable-"))
    sets = []
    if _REAL_DIR.value != "none":
        converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                          group_regex=_PATIENT, progress=None)
        sets.append(("real NORMAL vs DME", work / "real", _REAL_FOLDS.value, list(range(_REAL_FOLDS.value))))
    if _FOUR.value and _REAL_DIR.value != "none":
        converter.convert(_REAL_DIR.value, work / "four", input_format="image_folders",
                          classes=["NORMAL", "DME", "CNV", "DRUSEN"], group_regex=_PATIENT, progress=None)
        sets.append(("real, four classes", work / "four", _REAL_FOLDS.value, list(range(_REAL_FOLDS.value))))
    if _SYNTHETIC_FOLDS.value != ["none"]:
        render.write_dataset(work / "volumes", volumes=24, seed=0)
        converter.convert(work / "volumes", work / "synthetic", progress=None)
        sets.append(("synthetic (24 volumes)", work / "synthetic", 10, [int(f) for f in _SYNTHETIC_FOLDS.value]))
    lines = ["| data | trainable | folds | validation accuracy | validation AUC | test accuracy | test AUC | "
             "train images/s | wall s | wall / all |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, records_dir, k, fold_list in sets:
        wall_all = None
        for trainable, cache in SETTINGS:
            label = trainable + (" (backbone every step)" if cache is False else "")
            config = Config(data_dir=str(records_dir), logdir=str(work / "runs" / name[:6] / label[:12]),
                            arch="squeezenet", batch=16, folds=k, weights="imagenet", image_size=_IMAGE_SIZE.value,
                            crop="resize", trainable=trainable)
            trainer = session.Session(config, say=lambda line: None, progress=False, cache_features=cache)
            started = time.time()
            results = [trainer.run("baseline", fold) for fold in fold_list]
            seconds = time.time() - started
            wall_all = wall_all or seconds
            print(f"  {name}, {label}: {seconds:.0f} s", file=sys.stderr, flush=True)
            lines.append(f"| {name} | {label} | {','.join(map(str, fold_list))} of {k} | "
                         f"{mean_sd(r['best_accuracy'] for r in results)} | {mean_sd(r['best_auc'] for r in results)} | "
                         f"{mean_sd(r.get('test_accuracy') for r in results)} | "
                         f"{mean_sd(r.get('test_auc') for r in results)} | "
                         f"{statistics.fmean(r['train_images_per_second'] for r in results):.0f} | "
                         f"{seconds:.0f} | {seconds / wall_all:.2f} |")
    print("\n".join(lines))
    print("\nMean (standard deviation) over the folds; test: the checkpoint chosen on the validation fold, scored "
          "once on the held-out test fold; wall: the session's, decoding and building included.")


if __name__ == "__main__":
    app.run(main)
