r"""Beyond one binary label: Kermany's four OCT classes, and RETOUCH's three fluid types scored per volume.

  python benchmarks/oct_classes.py [--real_dir=../shared/data/oct2017-dev] [--folds=5] [--image_size=128]
      [--volumes=20] [--bscans=24] [--workdir=DIR]

Two measurements, each with the demo's settings (squeezenet from its ImageNet weights, whole B-scans resized to
--image_size, batch 16, the paper's protocol with its half-epoch early stop, baseline design with a held-out test
fold), every fold trained in one session (decoded and built once):
  * Kermany's four classes: the NORMAL, DME, CNV and DRUSEN folders of the real dev set (60 B-scans each, read
    in place), converted with the patient regex so that folds keep patients whole (and are stratified over the
    four classes). Per fold: the test fold's accuracy and macro AUC (mean of the one-vs-rest AUCs); then the
    one-vs-rest AUC per class (mean over folds) and the confusion matrix summed over the test folds, read from
    each run's test_predictions.csv (each B-scan is in one test fold). Beside them, Kermany et al. 2018's
    figures as issue 23 quotes them: cross-validation on 240 B-scans of ~150 patients is not their held-out
    1,000-image test after ~108,000 training images.
  * RETOUCH's fluid types (--task=fluid_types) on synthetic Spectralis volumes (the generator draws IRF, SRF and
    PED): per type, the test folds' accuracy and AUC per B-scan (mean over folds) and the per-volume AUC
    (a volume has a type when any B-scan does; its score is the highest probability among its B-scans) on the
    out-of-fold test scores pooled over the folds, each volume scored once (octtl.results.fluid_types); and each
    type's lowest test probability and share of outputs at exactly 0.5: squeezenet's head swap keeps the ReLU after
    conv10 (octtl.nets.models.swap_head), so its sigmoid outputs cannot fall below 0.5.
A --workdir that holds an earlier run's records and runs is read back rather than trained again.
"""

import collections
import pathlib
import statistics
import sys
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_REAL_DIR = flags.DEFINE_string("real_dir", str(REPO.parent / "shared" / "data" / "oct2017-dev"),
                                "Class folders NORMAL/, DME/, CNV/ and DRUSEN/ of Kermany-named JPEGs.")
_FOLDS = flags.DEFINE_integer("folds", 5, "Folds of each data set (every one is trained; the default holds one "
                              "out as the test fold).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Input side (whole B-scans resized).")
_VOLUMES = flags.DEFINE_integer("volumes", 20, "Synthetic Spectralis volumes for the fluid types.")
_BSCANS = flags.DEFINE_integer("bscans", 24, "B-scans per synthetic volume.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the volumes, records and runs go (default: a temp dir).")
_PATIENT = r"^[A-Z]+-(\d+)-\d+$"
CLASSES = ("NORMAL", "DME", "CNV", "DRUSEN")
# Issue 23's words: Kermany et al. 2018 (Cell 172:1122), held-out 1,000-image test split, ~108,000 training
# images; a RETFound model card fine-tuned on the same set.
KERMANY = (("Kermany et al. 2018 (ImageNet transfer, ~108,000 training images, 1,000-image test split)", "96.6%"),
           ("RETFound model card, fine-tuned on OCT2017 (as quoted in issue 23)", "85%"))


def _mean(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ({spread:.3f})"


def _number(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def _session(records_dir, logdir, task: str):
    from octtl.training import session
    from octtl.training.config import Config

    config = Config(data_dir=str(records_dir), logdir=str(logdir), arch="squeezenet", batch=16, folds=_FOLDS.value,
                    weights="imagenet", image_size=_IMAGE_SIZE.value, crop="resize", save_model=False, task=task)
    return session.Session(config, say=lambda line: None, progress=False)


def _train(trainer, label: str):
    from octtl import runs

    started = time.time()
    results = []
    for fold in range(trainer.design_folds("baseline")):
        result = trainer.run("baseline", fold)
        print(f"  {label}: {runs.summary_line(result)}", file=sys.stderr, flush=True)
        results.append(result)
    return results, time.time() - started


def four_classes(work: pathlib.Path) -> list:
    """The four-class table's lines."""
    from octtl import outputs, runs
    from octtl.data import converter

    if not (work / "kermany").is_dir():  # a --workdir of an earlier run: its finished runs are read back
        converter.convert(_REAL_DIR.value, work / "kermany", input_format="image_folders", classes=list(CLASSES),
                          group_regex=_PATIENT, progress=None)
    results, seconds = _train(_session(work / "kermany", work / "runs-kermany", "fluid"), "four classes")
    classes = results[0]["classes"]
    lines = ["| fold | test B-scans | validation accuracy | validation macro AUC | test accuracy | test macro AUC |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['fold']} | {r['test_size']} | {r['best_accuracy']:.3f} | {r['best_auc']:.3f} | "
                     f"{r['test_accuracy']:.3f} | {r['test_auc']:.3f} |")
    lines.append(f"| **mean (sd)** | {sum(r['test_size'] for r in results)} | "
                 f"{_mean(r['best_accuracy'] for r in results)} | {_mean(r['best_auc'] for r in results)} | "
                 f"**{_mean(r['test_accuracy'] for r in results)}** | **{_mean(r['test_auc'] for r in results)}** |")
    lines += ["", "One-vs-rest test AUC per class, mean (sd) over folds:", "",
              "| " + " | ".join(classes) + " |", "|" + "---|" * len(classes),
              "| " + " | ".join(_mean(r["test_class_auc"].get(c) for r in results) for c in classes) + " |"]
    # The confusion matrix of the chosen checkpoints on their test folds, from test_predictions.csv.
    counts, seen = collections.Counter(), 0
    for r in results:
        _, rows = outputs.read_csv(runs.run_of(r).folder(work / "runs-kermany") / runs.TEST_PREDICTIONS)
        for row in rows:
            counts[(classes[int(row["label"])], row["predicted"])] += 1
            seen += 1
    correct = sum(counts[(c, c)] for c in classes)
    lines += ["", f"Confusion matrix over the test folds ({seen} B-scans, each in one test fold; rows the true "
              f"class, columns the predicted one; pooled accuracy {correct / seen:.3f}):", "",
              "| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    lines += [f"| {t} | " + " | ".join(str(counts[(t, p)]) for p in classes) + " |" for t in classes]
    lines += ["", "| four-class accuracy | figure |", "|---|---|",
              f"| octtl, this run: squeezenet, {len(results)} grouped folds of 240 B-scans (153 patients), "
              f"{_IMAGE_SIZE.value} px, test folds | {100 * statistics.fmean(r['test_accuracy'] for r in results):.1f}% |"]
    lines += [f"| {who} | {figure} |" for who, figure in KERMANY]
    lines += ["", "Not the same ruler: cross-validation over a few hundred B-scans of a few dozen patients per "
              "class is not Kermany's held-out 1,000-image test after ~108,000 training images. "
              f"Chance: 0.25 accuracy, 0.5 AUC. Wall time: {seconds:.0f} s for {len(results)} runs."]
    return lines


def _type_outputs(results, logdir) -> dict:
    """{type: (lowest probability, share of probabilities exactly 0.5)} over the runs' test predictions: a sigmoid
    output that never goes below 0.5 cannot say "absent" (squeezenet keeps its ReLU after the swapped conv10)."""
    from octtl import outputs, runs
    from octtl.training import metrics

    values = {t: [] for t in metrics.FLUID_TYPES}
    for r in results:
        _, rows = outputs.read_csv(runs.run_of(r).folder(logdir) / runs.TEST_PREDICTIONS)
        for row in rows:
            for t in values:
                values[t].append(float(row[f"p_{t}"]))
    return {t: (min(v), sum(x == 0.5 for x in v) / len(v)) for t, v in values.items()}


def fluid_types(work: pathlib.Path) -> list:
    """The fluid-types table's lines."""
    from octtl.data import converter
    from octtl.results import fluid_types as types_report
    from octtl.synthetic import render

    if not (work / "synthetic").is_dir():
        render.write_dataset(work / "volumes", volumes=_VOLUMES.value, bscans=_BSCANS.value, seed=0)
        converter.convert(work / "volumes", work / "synthetic", progress=None)
    results, seconds = _train(_session(work / "synthetic", work / "runs-types", "fluid_types"), "fluid types")
    table = types_report.rows(results, work / "runs-types")
    outputs_of = _type_outputs(results, work / "runs-types")
    lines = ["| type | scored on | folds | B-scan accuracy | B-scan AUC mean (sd) | vendor | volumes (with type) "
             "| per-volume AUC (pooled) | lowest p | share of p = 0.5 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        sd = "" if row["bscan_auc_std"] is None else f" ({row['bscan_auc_std']:.3f})"
        low, at_half = outputs_of[row["type"]]
        lines.append(f"| {row['type']} | {row['on']} | {row['folds']} | {_number(row['bscan_accuracy'])} | "
                     f"{_number(row['bscan_auc'])}{sd} | {row['vendor']} | {row['volumes']} "
                     f"({row['volumes_with_type']}) | {_number(row['volume_auc'])} | {low:.3f} | {at_half:.2f} |")
    lines += ["", f"{_VOLUMES.value} synthetic Spectralis volumes of {_BSCANS.value} B-scans, {_FOLDS.value} folds "
              "grouped by volume and stratified on each volume's combination of types, held-out test folds. "
              "Per B-scan: mean over the test folds (a fold where a type has one answer only is left out of its "
              "mean). Per volume: highest probability among a volume's B-scans, AUC over the volumes pooled from "
              "the test folds (each scored once); undefined where one answer is missing. Lowest p and share of "
              "p = 0.5: over every test B-scan; a type whose outputs never fall below 0.5 has a head that cannot "
              "answer 'absent'. Mean of the runs' "
              f"mean type AUC: {_mean(r['test_auc'] for r in results)}. Wall time: {seconds:.0f} s for "
              f"{len(results)} runs."]
    return lines


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    work = pathlib.Path(_WORKDIR.value or tempfile.mkdtemp(prefix="octtl-classes-"))
    print("## Kermany's four classes (real dev set, patients grouped)\n")
    print("\n".join(four_classes(work)), flush=True)
    print("\n## Fluid types (synthetic volumes)\n")
    print("\n".join(fluid_types(work)))
    print(f"\nRuns: {work}")


if __name__ == "__main__":
    app.run(main)
