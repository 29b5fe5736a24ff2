r"""What the paper's ruler does to the estimates: ungrouped vs grouped folds, validation vs held-out test figures.

  python benchmarks/honest.py [--real_dir=../shared/data/oct2017-dev] [--synthetic_folds=0,1,2] [--real_folds=5]

Two data sets, each under three rulers, side by side in one run:
  * the demo's (flags/demo.cfg: squeezenet from its ImageNet weights, whole B-scans resized to 128 px, batch 16,
    the paper's protocol) on folds 0-2 of 10 of the default synthetic set (24 volumes of 49 B-scans);
  * the same settings on the real dev set (NORMAL vs DME of ../shared/data/oct2017-dev, patients as groups),
    every fold of 5.
Rulers: the paper's (folds not grouped, the checkpoint chosen and scored on the validation fold), ungrouped
with a held-out test fold, and octtl's default (grouped by volume or patient, held-out test fold). For each:
the mean over folds of the best validation accuracy and AUC (what the paper reports) and, with a test fold,
the chosen checkpoint's test accuracy and AUC, with the standard deviation over folds. Each setting trains in
one session (decoded and built once).
"""

import pathlib
import sys
import tempfile
import time

from absl import app, flags

from _cells import mean_sd

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs.")
_SYNTHETIC_FOLDS = flags.DEFINE_list("synthetic_folds", ["0", "1", "2"], "Folds of 10 trained on synthetic data.")
_REAL_FOLDS = flags.DEFINE_integer("real_folds", 5, "Folds of the real dev set (every one is trained).")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"
RULERS = (("paper: ungrouped, no test fold", False, "none"),
          ("ungrouped, held-out test fold", False, "auto"),
          ("grouped, held-out test fold (default)", True, "auto"))


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    from octtl.data import converter
    from octtl.synthetic import render
    from octtl.training import session
    from octtl.training.config import Config

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-honest-"))
    render.write_dataset(work / "volumes", volumes=24, seed=0)
    converter.convert(work / "volumes", work / "synthetic", progress=None)
    converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                      group_regex=_PATIENT, progress=None)
    sets = (("synthetic (24 volumes)", work / "synthetic", 10, [int(f) for f in _SYNTHETIC_FOLDS.value]),
            ("real dev set (NORMAL vs DME)", work / "real", _REAL_FOLDS.value, list(range(_REAL_FOLDS.value))))
    lines = ["| data | ruler | folds | validation accuracy | validation AUC | test accuracy | test AUC | wall s |",
             "|---|---|---|---|---|---|---|---|"]
    for name, records_dir, k, fold_list in sets:
        for ruler, grouped, test_fold in RULERS:
            config = Config(data_dir=str(records_dir), logdir=str(work / "runs" / name[:4] / ruler[:8]),
                            arch="squeezenet", batch=16, folds=k, weights="imagenet", image_size=128,
                            crop="resize", group_by_volume=grouped, test_fold=test_fold)
            trainer = session.Session(config, say=lambda line: None, progress=False)
            started = time.time()
            results = [trainer.run("baseline", fold) for fold in fold_list]
            seconds = time.time() - started
            print(f"  {name}, {ruler}: {seconds:.0f} s", file=sys.stderr, flush=True)
            lines.append(f"| {name} | {ruler} | {','.join(map(str, fold_list))} of {k} | "
                         f"{mean_sd(r['best_accuracy'] for r in results)} | {mean_sd(r['best_auc'] for r in results)} | "
                         f"{mean_sd(r.get('test_accuracy') for r in results)} | "
                         f"{mean_sd(r.get('test_auc') for r in results)} | {seconds:.0f} |")
    print("\n".join(lines))
    print("\nMean (standard deviation) over the folds; test figures: the checkpoint chosen on the validation fold, "
          "scored once on the held-out test fold.")


if __name__ == "__main__":
    app.run(main)
