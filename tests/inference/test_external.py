"""Tests of octtl/inference/external.py: predict with the run's thresholds and temperature, intervals over volumes,
class folders, and export --calibrated (issue #24).

The session's SqueezeNet (conftest's `trained_run`) recorded its thresholds and temperature when it trained.
"""

import csv
import json
import pathlib
import re

import numpy as np
import pytest
from PIL import Image

from conftest import refusal, run_main
from octtl import export, predict, runs
from octtl.errors import InputError
from octtl.inference import external, predictor, savedmodel
from octtl.training import calibration, metrics


def read_csv(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# Three volumes: A (rows 0-3), B (4-7), C (8-11).
VOLUMES = ["A"] * 4 + ["B"] * 4 + ["C"] * 4
LABELS = np.array([1, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0])
P = np.array([0.9, 0.6, 0.6, 0.1, 0.8, 0.7, 0.4, 0.3, 0.6, 0.2, 0.1, 0.05])


def test_scores_by_hand():
    # p > 0.6 (the paper's rule at a number): fluid 0.9 0.8 0.7 called; 0.6 0.4 missed; normal 0.6 0.6 not called.
    figures = external.scores(VOLUMES, LABELS, P, external.Threshold(0.6), draws=200)
    assert {k: figures[k] for k in ("n", "volumes", "tp", "fp", "tn", "fn")} == dict(
        n=12, volumes=3, tp=3, fp=0, tn=7, fn=2)
    assert figures["prevalence"] == pytest.approx(5 / 12)
    assert figures["sensitivity"]["value"] == pytest.approx(3 / 5) and figures["npv"]["value"] == pytest.approx(7 / 9)
    # p >= 0.6 (a recorded threshold's rule): 0.6 fluid called too, and two 0.6 normals flagged.
    figures = external.scores(VOLUMES, LABELS, P, external.Threshold(0.6, "youden", True), draws=200)
    assert (figures["tp"], figures["fp"], figures["tn"], figures["fn"]) == (4, 2, 5, 1)
    assert figures["ppv"]["value"] == pytest.approx(4 / 6) and figures["accuracy"]["value"] == pytest.approx(9 / 12)
    # Brier: mean (p - y)^2 by hand; ECE over 10 equal-mass bins (12 rows: two bins of 2, eight of 1).
    assert figures["brier"]["value"] == pytest.approx(np.mean((P - LABELS) ** 2))
    assert figures["ece"]["value"] == pytest.approx(calibration.ece(P, LABELS, 10))
    assert figures["auc"]["value"] == pytest.approx(metrics.auc(P, LABELS))


def test_intervals_resample_whole_volumes():
    """Each draw takes three volume names with replacement (default_rng(0)) and every row of each."""
    figures = external.scores(VOLUMES, LABELS, P, external.Threshold(0.5), draws=300)
    rng = np.random.default_rng(0)
    names = ["A", "B", "C"]
    values = []
    for _ in range(300):
        rows = np.concatenate([np.flatnonzero(np.array(VOLUMES) == names[g]) for g in rng.integers(0, 3, 3)])
        values.append(np.mean((P[rows] > 0.5) == LABELS[rows]))
    assert (figures["accuracy"]["low"], figures["accuracy"]["high"]) == pytest.approx(
        tuple(np.percentile(values, [2.5, 97.5])))
    # Rows of one volume always move together: three distinct volume accuracies, so few distinct draws.
    shuffled = np.random.default_rng(1).permutation(12)
    again = external.scores(np.array(VOLUMES)[shuffled], LABELS[shuffled], P[shuffled], external.Threshold(0.5),
                            draws=300)
    assert again["accuracy"] == figures["accuracy"]


@pytest.mark.parametrize("text, result, message", [
    ("0.3x", {}, "--threshold=0.3x: a number in [0, 1], or a threshold the model's run recorded: "
                 "target_sensitivity, youden"),
    ("1.5", {}, "--threshold=1.5: must be in [0, 1]"),
    ("youden", {}, "records no thresholds (the run predates them)"),
    ("youden", {"thresholds": {"youden": None}}, "the run's validation set could not define it"),
])
def test_threshold_refusals(text, result, message):
    with pytest.raises(InputError, match=re.escape(message)):
        external.resolve_threshold(text, result, "run/best.keras")


def test_threshold_names_take_the_recorded_value_and_rule():
    result = {"thresholds": {"0.5": 0.5, "target_sensitivity": 0.31, "youden": 0.62},
              "threshold_rules": {"0.5": ">", "target_sensitivity": ">=", "youden": ">="}}
    assert external.resolve_threshold("target_sensitivity", result, "m") == external.Threshold(
        0.31, "target_sensitivity", True)
    assert external.resolve_threshold("0.5", result, "m") == external.Threshold(0.5)
    assert external.resolve_threshold("0.25", result, "m") == external.Threshold(0.25)
    with pytest.raises(InputError, match="--calibrated: .* records no temperature"):
        external.temperature(result, "run/best.keras")


@pytest.fixture(scope="module")
def model(trained_run):
    return trained_run / runs.BEST_MODEL


def test_predict_with_the_runs_threshold_and_temperature(model, heldout, tmp_path):
    result = json.loads((model.parent / runs.RESULT).read_text())
    threshold, temperature = result["thresholds"]["target_sensitivity"], result["temperature"]
    predictor.predict(model, heldout, tmp_path / "plain.csv")  # as trained, the default threshold
    code, out, err = run_main(predict, f"--model={model}", f"--input={heldout}", f"--output={tmp_path / 'p.csv'}",
                              "--threshold=target_sensitivity", "--calibrated")
    assert code == 0, err[-2000:]
    rows, before = read_csv(tmp_path / "p.csv"), read_csv(tmp_path / "plain.csv")
    p = np.array([float(r["p_fluid"]) for r in rows])
    expected = calibration.apply_temperature(np.array([float(r["p_fluid"]) for r in before]), temperature)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-12)
    # The recorded rule (p >= t) on the scores as trained calls the same B-scans as the threshold scaled alike on
    # the calibrated scores: temperature scaling keeps their order.
    calls = [int(r["prediction"]) for r in rows]
    assert calls == (np.array([float(r["p_fluid"]) for r in before]) >= threshold).astype(int).tolist()
    scaled = calibration.apply_temperature(np.array([threshold]), temperature)[0]
    assert calls == (p >= scaled).astype(int).tolist()
    assert f"predicted fluid (p_fluid >= {scaled:g})" in out
    labels = np.array([int(r["label"]) for r in rows])
    table = {r["metric"]: r for r in read_csv(tmp_path / "p_metrics.csv")}
    assert int(table["tp"]["value"]) == int(np.sum((p >= scaled) & (labels == 1)))
    assert int(table["volumes"]["value"]) == len({r["volume_id"] for r in rows}) == 6
    assert float(table["ece"]["value"]) == pytest.approx(calibration.ece(p, labels, 10))
    for name in external.WITH_INTERVAL:
        if table[name]["ci_low"]:
            assert float(table[name]["ci_low"]) <= float(table[name]["value"]) <= float(table[name]["ci_high"])
    assert (f"the run's target_sensitivity threshold {threshold:.4g}, temperature-scaled like the scores, chosen on "
            "its validation predictions") in out
    assert "1000 bootstrap draws of the 6 volumes" in out and "after the run's temperature (--calibrated)" in out


def test_class_folders_are_labelled_and_grouped_by_patient(model, heldout, tmp_path):
    """Held-out B-scans as PNGs in a folder per class of the model (normal, fluid) and one it lacks: labelled by
    their folder, grouped into patients by --group_regex, the unknown class left out and named."""
    plain = predictor.predict(model, heldout, tmp_path / "plain.csv")
    root = tmp_path / "classes"
    for name in ("normal", "fluid", "drusen"):
        (root / name).mkdir(parents=True)
    scans = list(predictor.read_input(heldout))
    for k, scan in enumerate(scans):
        for s, (image, label) in enumerate(zip(scan.images, scan.labels)):
            Image.fromarray(image).save(root / ("fluid" if label else "normal") / f"P{k}-{s}.png")
    Image.fromarray(scans[0].images[0]).save(root / "drusen" / "Q9-0.png")
    code, out, err = run_main(predict, f"--model={model}", f"--input={root}", f"--output={tmp_path / 'c.csv'}",
                              r"--group_regex=^P(\d+)-\d+$")
    assert code == 0, err[-2000:]
    rows = read_csv(tmp_path / "c.csv")
    assert len(rows) == len(plain.rows) and {r["volume_id"] for r in rows} == {str(k) for k in range(len(scans))}
    by_source = {(r["volume_id"], r["source"]): r for r in rows}
    for k, scan in enumerate(scans):
        for s, label in enumerate(scan.labels):
            assert by_source[(str(k), f"P{k}-{s}")]["label"] == str(int(label))
    assert "note: labelled by the class folders normal, fluid; left out (not the model's classes): drusen" in out
    assert f"bootstrap draws of the {len(scans)} groups" in out
    # --group_regex on anything but class folders is refused before TensorFlow's seconds.
    assert refusal(predict, f"--model={model}", f"--input={heldout}", f"--output={tmp_path / 'x.csv'}",
                   "--group_regex=(x)") == (f"--group_regex: applies to class folders (a folder per class of the "
                                            f"model: normal, fluid), which {heldout} is not")


def test_refusals_come_before_any_output(model, heldout, tmp_path):
    assert refusal(predict, f"--model={model}", f"--input={heldout}", f"--output={tmp_path / 'p.csv'}",
                   "--threshold=sometimes").startswith("--threshold=sometimes: a number in [0, 1]")
    old = tmp_path / "old"
    old.mkdir()
    for name in (runs.BEST_MODEL, runs.RESULT):
        (old / name).write_bytes((model.parent / name).read_bytes())
    result = json.loads((old / runs.RESULT).read_text())
    (old / runs.RESULT).write_text(json.dumps({k: v for k, v in result.items() if k != "temperature"}))
    message = refusal(predict, f"--model={old / runs.BEST_MODEL}", f"--input={heldout}",
                      f"--output={tmp_path / 'p.csv'}", "--calibrated")
    assert message.startswith("--calibrated: ") and "records no temperature" in message
    assert refusal(export, f"--model={old / runs.BEST_MODEL}", f"--output={tmp_path / 'e'}",
                   "--calibrated").startswith("--calibrated: ")
    assert not list(tmp_path.glob("p*.csv")) and not (tmp_path / "e").exists()


def test_export_calibrated_serves_predicts_calibrated_probabilities(model, heldout, tmp_path):
    import tensorflow as tf

    code, out, err = run_main(export, f"--model={model}", f"--output={tmp_path / 'e'}", "--calibrated")
    assert code == 0, err[-2000:]
    temperature = json.loads((model.parent / runs.RESULT).read_text())["temperature"]
    assert f"temperature-scaled (T = {temperature:.4g})" in out
    assert json.loads((tmp_path / "e" / savedmodel.EXPORT_METADATA).read_text())["temperature"] == temperature
    scan = next(iter(predictor.read_input(heldout)))
    bscans = np.stack(scan.images)
    served = tf.saved_model.load(str(tmp_path / "e")).signatures["serving_default"](
        bscans=tf.constant(bscans))["p_fluid"].numpy()
    keras_model, config = predictor.load_model(model)
    forward = predictor.Predictor(keras_model, config)
    expected = calibration.apply_temperature(forward(forward.inputs(list(bscans))), temperature)
    np.testing.assert_allclose(served, expected, atol=2e-5)
    assert pathlib.Path(tmp_path / "e" / "saved_model.pb").is_file()
