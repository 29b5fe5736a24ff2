r"""Calibration and operating points on real B-scans: test ECE before and after temperature scaling.

  python benchmarks/calibration.py [--real_dir=../shared/data/oct2017-dev] [--folds=5] [--image_size=128]

The NORMAL and DME folders of the real dev set (Kermany's OCT2017 test split, read in place), converted with the
patient regex so that folds keep patients whole, and the demo's settings (squeezenet from its ImageNet weights,
whole B-scans resized, batch 16, the paper's protocol, baseline design with a held-out test fold). Per fold, from
what each run records (octtl.training.clinical): the temperature fitted on the validation predictions, the test
set's Brier score and ECE (10 equal-mass bins) as trained and after that temperature, and the test sensitivity and
specificity at the threshold chosen on validation for sensitivity 0.95; then their means over folds.
"""

import pathlib
import statistics
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/ and DME/ of Kermany-named JPEGs.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Folds (every one is trained).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side (whole B-scans resized).")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"
COLUMNS = ("fold", "test B-scans", "T", "Brier", "Brier after T", "ECE", "ECE after T", "sensitivity at target",
           "specificity at target", "test accuracy", "test AUC")


def _row(result: dict) -> list:
    test = result["calibration"]["test"]
    at = result["operating_points"]["test"]["target_sensitivity"] or {}
    return [result["fold"], result["test_size"], result["temperature"], test["brier"], test["brier_calibrated"],
            test["ece"], test["ece_calibrated"], at.get("sensitivity"), at.get("specificity"),
            result["test_accuracy"], result["test_auc"]]


def _cell(value) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    from octtl.data import converter
    from octtl.training import session
    from octtl.training.config import Config

    work = pathlib.Path(tempfile.mkdtemp(prefix="octtl-calibration-"))
    converter.convert(_REAL_DIR.value, work / "real", input_format="image_folders", classes=["NORMAL", "DME"],
                      group_regex=_PATIENT, progress=None)
    config = Config(data_dir=str(work / "real"), logdir=str(work / "runs"), arch="squeezenet", batch=16,
                    folds=_FOLDS.value, weights="imagenet", image_size=_IMAGE_SIZE.value, crop="resize",
                    save_model=False)
    trainer = session.Session(config, say=lambda line: None, progress=False)
    started = time.time()
    rows = [_row(trainer.run("baseline", fold)) for fold in range(_FOLDS.value)]
    seconds = time.time() - started
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    means = ["mean", sum(r[1] for r in rows)] + [
        statistics.fmean(v for v in column if v is not None) if any(v is not None for v in column) else None
        for column in list(zip(*rows))[2:]]
    lines.append("| " + " | ".join(f"**{_cell(v)}**" for v in means) + " |")
    print("\n".join(lines))
    print(f"\nT fitted on each fold's validation predictions (T > 1 softens, T < 1 sharpens); ECE over 10 "
          f"equal-mass bins; {seconds:.0f} s for {_FOLDS.value} runs.")


if __name__ == "__main__":
    app.run(main)
