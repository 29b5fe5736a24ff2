"""The report's operating points, calibration and vendor table (octtl/results/clinical.py, octtl/results/vendors.py).

Two folds of fixed predictions files, every expected number worked out by hand (in the comments); one fold's
result.json records its operating points as training does, the other's predates them and the report computes
them from its predictions files: both ways must give the hand values.
"""

import csv
import json

import numpy as np
import pytest

from octtl import runs
from octtl.results import clinical, page, tables, vendors
from octtl.training import clinical as recorded
from octtl.training import metrics

# Fold 0: validation 5 fluid + 5 normal; test the same, a normal B-scan exactly at 0.5.
P_VAL = np.array([0.95, 0.85, 0.70, 0.50, 0.40, 0.65, 0.50, 0.30, 0.20, 0.10])
Y_VAL = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
P_TEST = np.array([0.90, 0.80, 0.60, 0.45, 0.35, 0.75, 0.55, 0.50, 0.15, 0.05])
Y_TEST = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
# Fold 1: the same validation (so the same thresholds: target 0.95 -> 0.40, Youden -> 0.70), another test set.
P_TEST1 = np.array([0.9, 0.6, 0.3, 0.8, 0.2, 0.1])
Y_TEST1 = np.array([1, 1, 1, 0, 0, 0])
# Per fold (sensitivity, specificity, PPV, NPV), and the two-by-two (tp, fp, tn, fn):
#   0.5 (p > 0.5):  fold 0: 3 of 5 found, 2 of 5 flagged: (3/5, 3/5, 3/5, 3/5), (3, 2, 3, 2);
#                   fold 1: 0.9 0.6 found, 0.8 flagged:   (2/3, 2/3, 2/3, 2/3), (2, 1, 2, 1).
#   0.40 (>=):      fold 0: (4/5, 2/5, 4/7, 2/3), (4, 3, 2, 1); fold 1: as at 0.5, (2/3, 2/3, 2/3, 2/3), (2, 1, 2, 1).
#   0.70 (>=):      fold 0: (2/5, 4/5, 2/3, 4/7), (2, 1, 4, 3); fold 1: (1/3, 2/3, 1/2, 1/2), (1, 1, 2, 2).
EXPECTED = {
    "0.5": dict(sensitivity=(3 / 5 + 2 / 3) / 2, specificity=(3 / 5 + 2 / 3) / 2, ppv=(3 / 5 + 2 / 3) / 2,
                npv=(3 / 5 + 2 / 3) / 2, counts=(5, 3, 5, 3), value=0.5),
    "target_sensitivity": dict(sensitivity=(4 / 5 + 2 / 3) / 2, specificity=(2 / 5 + 2 / 3) / 2,
                               ppv=(4 / 7 + 2 / 3) / 2, npv=(2 / 3 + 2 / 3) / 2, counts=(6, 4, 4, 2), value=0.40),
    "youden": dict(sensitivity=(2 / 5 + 1 / 3) / 2, specificity=(4 / 5 + 2 / 3) / 2, ppv=(2 / 3 + 1 / 2) / 2,
                   npv=(4 / 7 + 1 / 2) / 2, counts=(3, 2, 6, 5), value=0.70),
}
# Test Brier: fold 0 2.075 / 10 = 0.2075; fold 1 (0.01 + 0.16 + 0.49 + 0.64 + 0.04 + 0.01) / 6 = 0.225.
# Test ECE (10 equal-mass bins, one row each here): mean |p - y|: fold 0 3.9 / 10, fold 1 2.3 / 6.
TEST_BRIER, TEST_ECE = (0.2075 + 0.225) / 2, (0.39 + 2.3 / 6) / 2
# Validation (both folds alike): Brier 1.5375 / 10, ECE 3.35 / 10.
VAL_BRIER, VAL_ECE = 0.15375, 0.335
# Test volumes: fold 0 holds A (rows 0-2), B (3-5), C (6-9); fold 1 holds A again (rows 0-1: a volume tested in
# two folds, as in the limited design) and D (2-5).
VOLUMES = (["A"] * 3 + ["B"] * 3 + ["C"] * 4, ["A"] * 2 + ["D"] * 4)


def write_predictions(path, volumes, labels, p_fluid):
    """A predictions file as octtl.training.fitting writes it."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(runs.PREDICTION_COLUMNS)
        for k, (volume, label, p) in enumerate(zip(volumes, labels, p_fluid)):
            writer.writerow([volume, k, int(label), repr(float(p)), f"{volume}:{k}"])


def write_fold(logdir, fold, test_p, test_y, volumes, record: bool, design="baseline", arch="alexnet", **extra):
    """A finished run's folder: result.json (with or without what training records of its operating points),
    predictions.csv and test_predictions.csv."""
    folder = runs.Run(design, arch, 8, fold).folder(logdir)
    folder.mkdir(parents=True)
    write_predictions(folder / runs.PREDICTIONS, [f"V{k}" for k in range(10)], Y_VAL, P_VAL)
    write_predictions(folder / runs.TEST_PREDICTIONS, volumes, test_y, test_p)
    result = {"design": design, "arch": arch, "batch": 8, "fold": fold, "folds": 5, "status": "ok", "seed": 0,
              "group_by_volume": True, "best_accuracy": 0.7, "best_auc": 0.9, "iterations_to_best": 3,
              "train_size": 30, "val_size": 10, "test_size": len(test_y), "test_fold": "auto",
              "test_accuracy": float(np.mean((test_p > 0.5) == test_y)), "test_auc": metrics.auc(test_p, test_y),
              **extra}
    if record:
        result.update(recorded.record(P_VAL, Y_VAL, test_p, test_y))
    (folder / runs.RESULT).write_text(json.dumps(result))
    return result


@pytest.fixture
def two_folds(tmp_path):
    results = [write_fold(tmp_path, 0, P_TEST, Y_TEST, VOLUMES[0], record=False),
               write_fold(tmp_path, 1, P_TEST1, Y_TEST1, VOLUMES[1], record=True)]
    return tmp_path, results


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_operating_points_and_calibration_by_hand(two_folds):
    logdir, results = two_folds
    rows, _ = tables.aggregate(results)
    written, summaries = clinical.write(results, logdir, logdir, rows)
    assert {p.name for p in written} == {"operating_points_baseline.csv", "operating_points_folds_baseline.csv",
                                         "calibration_baseline.csv", "reliability_baseline.png"}
    operating = {r["threshold"]: r for r in read(logdir / "operating_points_baseline.csv")}
    assert list(operating) == ["0.5", "target_sensitivity", "youden"]
    for name, expected in EXPECTED.items():
        row = operating[name]
        assert (row["estimate"], row["n_folds"], row["target_sensitivity"]) == ("test", "2", "0.95")
        for rate in clinical.RATES:
            assert float(row[f"{rate}_mean"]) == pytest.approx(expected[rate]), (name, rate)
            assert float(row[f"{rate}_ci_low"]) <= float(row[f"{rate}_ci_high"])
        assert tuple(int(row[f"{c}_sum"]) for c in ("tp", "fp", "tn", "fn")) == expected["counts"]
        assert (int(row["n_sum"]), float(row["prevalence_mean"])) == (16, 0.5)
        assert float(row["threshold_mean"]) == pytest.approx(expected["value"])
        assert (row["n_volumes"], row["n_bootstrap_folds"]) == ("4", "2")  # A, B, C, D
    [cal] = read(logdir / "calibration_baseline.csv")
    assert (float(cal["brier_mean"]), float(cal["ece_mean"])) == pytest.approx((TEST_BRIER, TEST_ECE))
    assert (float(cal["val_brier_mean"]), float(cal["val_ece_mean"])) == pytest.approx((VAL_BRIER, VAL_ECE))
    assert cal["bins"] == "10" and cal["estimate"] == "test"
    # Per run: the recorded fold and the one computed from its predictions files alike.
    by_fold = read(logdir / "operating_points_folds_baseline.csv")
    fold0 = {(r["side"], r["threshold"]): r for r in by_fold if r["fold"] == "0"}
    assert [fold0[("test", "target_sensitivity")][c] for c in ("tp", "fp", "tn", "fn", "value")] == [
        "4", "3", "2", "1", "0.4"]
    assert len(by_fold) == 2 * 2 * 3  # folds x sides x thresholds
    assert summaries["baseline"].side == "test" and not summaries["baseline"].left_out


def _by_hand_interval(rate, results_rows):
    """The percentile interval of the mean over folds of `rate`, resampling whole volumes: each draw takes as many
    volume names as there are, with replacement (numpy's default_rng(0), as octtl.training.metrics does), and
    every row of each drawn volume in every fold, scored per fold at that fold's threshold with two_by_two."""
    names = sorted({v for volumes, _, _, _ in results_rows for v in volumes})
    rng = np.random.default_rng(0)
    values = []
    for _ in range(clinical.DRAWS):
        picks = rng.integers(0, len(names), len(names))
        per_fold = []
        for volumes, labels, p, threshold in results_rows:
            rows = np.concatenate([np.flatnonzero(np.asarray(volumes) == names[g]) for g in picks])
            table = metrics.two_by_two(p[rows], labels[rows], threshold) if len(rows) else {rate: None}
            if table[rate] is not None:
                per_fold.append(table[rate])
        if per_fold:
            values.append(np.mean(per_fold))
    return np.percentile(values, [2.5, 97.5])


def test_the_bootstrap_resamples_whole_volumes_across_folds(two_folds):
    logdir, results = two_folds
    rows, _ = tables.aggregate(results)
    clinical.write(results, logdir, logdir, rows)
    row = {r["threshold"]: r for r in read(logdir / "operating_points_baseline.csv")}["target_sensitivity"]
    folds_ = [(VOLUMES[0], Y_TEST, P_TEST, 0.40), (VOLUMES[1], Y_TEST1, P_TEST1, 0.40)]
    for rate in ("sensitivity", "ppv"):
        low, high = _by_hand_interval(rate, folds_)
        assert (float(row[f"{rate}_ci_low"]), float(row[f"{rate}_ci_high"])) == pytest.approx((low, high))


def test_rows_of_a_volume_move_together(tmp_path):
    """Shuffling the rows of the predictions file leaves the interval as it is; naming each row its own volume (as if
    B-scans were independent) changes it."""
    def interval(volumes, order=slice(None)):
        logdir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        results = [write_fold(logdir, 0, P_TEST[order], Y_TEST[order], np.array(volumes)[order].tolist(), True)]
        rows, _ = tables.aggregate(results)
        clinical.write(results, logdir, logdir, rows)
        row = {r["threshold"]: r for r in read(logdir / "operating_points_baseline.csv")}["target_sensitivity"]
        return float(row["sensitivity_ci_low"]), float(row["sensitivity_ci_high"])

    whole = interval(VOLUMES[0])
    assert interval(VOLUMES[0], np.random.default_rng(1).permutation(10)) == whole == (0.5, 1.0)
    assert interval([f"row{k}" for k in range(10)]) == (0.4, 1.0)


def test_without_a_test_set_the_validation_predictions_say_so(tmp_path):
    folder = runs.Run("baseline", "alexnet", 8, 0).folder(tmp_path)
    folder.mkdir(parents=True)
    write_predictions(folder / runs.PREDICTIONS, ["V0"] * 5 + ["V1"] * 5, Y_VAL, P_VAL)
    results = [{"design": "baseline", "arch": "alexnet", "batch": 8, "fold": 0, "folds": 5, "status": "ok",
                "best_accuracy": 0.7, "best_auc": 0.9, "iterations_to_best": 3},
               {"design": "baseline", "arch": "alexnet", "batch": 8, "fold": 1, "folds": 5, "status": "ok",
                "best_accuracy": 0.7, "best_auc": 0.9, "iterations_to_best": 3}]
    rows, _ = tables.aggregate(results)
    _, summaries = clinical.write(results, tmp_path, tmp_path, rows)
    summary = summaries["baseline"]
    assert summary.side == "validation" and summary.left_out == [
        "alexnet batch 8: folds 1 record no operating points and their predictions files are gone"]
    assert {r["n_folds"] for r in summary.operating} == {1}
    html = "\n".join(clinical.section(summaries, {}, None, rows))
    assert clinical.VALIDATION_NOTE.replace("'", "&#x27;") in html and "Validation ECE after T" in html


def _vendor_results():
    """The vendor design's three folds and baseline runs that scored each vendor's test volumes."""
    data = {"manifest_sha256": "x", "num_examples": 90}
    out = []
    for fold, (vendor, accuracy, auc) in enumerate((("cirrus", 0.70, 0.80), ("spectralis", 0.90, 0.95),
                                                    ("topcon", 0.60, None))):
        record = recorded.record(P_VAL, Y_VAL, P_TEST, Y_TEST)  # what training records, then made-up figures
        record["operating_points"]["test"]["target_sensitivity"].update(sensitivity=0.9, specificity=0.5)
        record["calibration"]["test"].update(ece=0.2, ece_calibrated=0.1)
        out.append({"design": "vendor", "arch": "vgg16", "batch": 8, "fold": fold, "status": "ok", "data": data,
                    "test_vendor": vendor, "train_vendors": sorted({"cirrus", "spectralis", "topcon"} - {vendor}),
                    "test_size": 30, "test_accuracy": accuracy, "test_auc": auc, "best_accuracy": 0.9,
                    "iterations_to_best": 5, **record})
    for fold in range(3):  # within-vendor: each vendor's test volumes of the baseline folds
        out.append({"design": "baseline", "arch": "vgg16", "batch": 8, "fold": fold, "status": "ok", "data": data,
                    "test_by_vendor": {"cirrus": {"accuracy": 0.8 + 0.05 * fold, "auc": 0.9},
                                       "spectralis": {"accuracy": 0.9, "auc": 0.9 + 0.02 * fold},
                                       "topcon": {"accuracy": 0.85, "auc": None}}})
    out.append({**out[-1], "fold": 3, "data": {"manifest_sha256": "other"}})  # other records: not within
    return out


def test_the_vendor_table_sets_each_left_out_vendor_beside_its_within_vendor_folds():
    rows = {r["vendor"]: r for r in vendors.rows(_vendor_results(), None)}
    assert list(rows) == ["cirrus", "spectralis", "topcon"]
    cirrus = rows["cirrus"]
    assert (cirrus["train_vendors"], cirrus["accuracy"], cirrus["within_design"], cirrus["within_folds"]) == (
        "spectralis+topcon", 0.70, "baseline", 3)
    assert cirrus["within_accuracy"] == pytest.approx(0.85) and cirrus["accuracy_change"] == pytest.approx(-0.15)
    assert cirrus["auc_change"] == pytest.approx(0.80 - 0.9)
    assert rows["spectralis"]["within_auc"] == pytest.approx(0.92)
    assert rows["topcon"]["auc_change"] != rows["topcon"]["auc_change"]  # undefined on both sides: NaN
    assert (cirrus["sensitivity"], cirrus["specificity"], cirrus["ece"], cirrus["ece_calibrated"]) == (
        0.9, 0.5, 0.2, 0.1)
    html = "\n".join(vendors.section(list(rows.values())))
    assert "<td>cirrus (spectralis, topcon)</td>" in html and "<td>-0.150 / -0.100</td>" in html


def test_the_report_page_shows_the_new_sections(two_folds, tmp_path):
    logdir, results = two_folds
    for r in _vendor_results()[:3]:
        results.append(r)
    written = page.write_report(results, tmp_path / "report", "test", logdir=logdir)
    names = {p.name for p in written}
    assert {"operating_points_baseline.csv", "calibration_baseline.csv", "reliability_baseline.png",
            "vendors.csv"} <= names
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.index("<h2>Operating points and calibration</h2>") < html.index("<h2>Another scanner")
    assert 'alt="reliability_baseline.png"' in html and "Leave-one-vendor-out design" in html
