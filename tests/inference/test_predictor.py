"""Tests of octtl.inference.predictor, octtl.inference.inputs and `python -m octtl.predict` on synthetic volumes.

The session's SqueezeNet fine-tuned from its ImageNet weights (conftest's `trained_run`) is applied to
held-out volumes drawn from another seed.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from conftest import BSCANS, HELDOUT_VOLUMES, REPO, SIDE, fake_run, refusal, run_main, write_volume
from octtl import predict, runs, to_tfrecord
from octtl.data import pipeline
from octtl.inference import predictor
from octtl.data import volumes
from octtl.errors import InputError


def reference_labels(volume_dir) -> np.ndarray:
    """Fluid flag per B-scan straight from reference.mhd (any nonzero code), independent of octtl."""
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(volume_dir / "reference.mhd")))
    return (reference.reshape(len(reference), -1) > 0).any(axis=1).astype(int)


def read_csv(path) -> list:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_cli(module, *args, cwd=None):
    """The command in a fresh process, as a user runs it: no TF_CPP_MIN_LOG_LEVEL, no OCTTL_VERBOSE."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "OCTTL_VERBOSE")}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          timeout=600, cwd=cwd or REPO)


@pytest.fixture(scope="module")
def run_folder(trained_run):
    return trained_run


@pytest.fixture(scope="module")
def cli_run(run_folder, heldout, tmp_path_factory):
    """`python -m octtl.predict` on the held-out volumes with Grad-CAM; (process, output folder)."""
    out = tmp_path_factory.mktemp("predict")
    proc = run_cli("octtl.predict", f"--model={run_folder / 'best.keras'}", f"--input={heldout}",
                   f"--output={out / 'predictions.csv'}", f"--gradcam_dir={out / 'gradcam'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A healthy run prints octtl's lines only: none of TensorFlow's, absl's or CUDA's start-up chatter.
    assert proc.stderr == "", proc.stderr[-3000:]
    return proc, out


def test_predictions_on_heldout_volumes(cli_run, heldout):
    proc, out = cli_run
    rows = read_csv(out / "predictions.csv")
    assert list(rows[0]) == ["volume_id", "slice", "p_fluid", "prediction", "source", "label"]
    assert len(rows) == HELDOUT_VOLUMES * BSCANS
    folders = sorted(p for p in heldout.rglob("TRAIN*") if p.is_dir())
    expected = [(f.name, s, label) for f in folders for s, label in enumerate(reference_labels(f))]
    assert [(r["volume_id"], int(r["slice"]), int(r["label"])) for r in rows] == expected
    assert [r["source"] for r in rows] == [f"{v}:{s}" for v, s, _ in expected]

    p = np.array([float(r["p_fluid"]) for r in rows])
    predicted = np.array([int(r["prediction"]) for r in rows])
    labels = np.array([label for _, _, label in expected])
    np.testing.assert_array_equal(predicted, (p > 0.5).astype(int))
    accuracy, majority = np.mean(predicted == labels), max(labels.mean(), 1 - labels.mean())
    assert accuracy > majority, (accuracy, majority)
    assert f"accuracy {accuracy:.4f} (majority class {majority:.4f})" in proc.stdout


def test_volume_summary_matches_rows(cli_run):
    proc, out = cli_run
    rows = read_csv(out / "predictions.csv")
    summary = read_csv(out / "predictions_volumes.csv")
    assert list(summary[0]) == ["volume_id", "n_bscans", "n_fluid_predicted", "max_p_fluid", "fluid_slices"]
    assert [s["volume_id"] for s in summary] == sorted({r["volume_id"] for r in rows})
    for s in summary:
        mine = [r for r in rows if r["volume_id"] == s["volume_id"]]
        fluid = [int(r["slice"]) for r in mine if r["prediction"] == "1"]
        assert int(s["n_bscans"]) == len(mine)
        assert int(s["n_fluid_predicted"]) == len(fluid)
        assert float(s["max_p_fluid"]) == max(float(r["p_fluid"]) for r in mine)
        assert predictor.parse_slices(s["fluid_slices"]) == fluid
        assert f"{s['volume_id']}  " in proc.stdout


def test_gradcam_pngs_and_pointing_game(cli_run):
    proc, out = cli_run
    rows = read_csv(out / "predictions.csv")
    table = read_csv(out / "gradcam" / "gradcam.csv")
    predicted = {(r["volume_id"], r["slice"]) for r in rows if r["prediction"] == "1"}
    pngs = sorted(p.name for p in (out / "gradcam").glob("*.png"))
    assert len(pngs) == len(predicted) > 0
    assert {(r["volume_id"], r["slice"]) for r in table if r["png"]} == predicted
    with Image.open(out / "gradcam" / pngs[0]) as picture:
        assert picture.size == (SIDE, SIDE) and picture.mode == "RGB"
    scored = [r for r in table if r["peak_in_fluid"] != ""]
    assert len(scored) == sum(r["label"] == "1" for r in rows)  # every reference-fluid B-scan
    score = np.mean([int(r["peak_in_fluid"]) for r in scored])
    chance = np.mean([float(r["chance_hit"]) for r in scored])
    assert (f"pointing game {score:.4f} on {len(scored)} fluid B-scans with a reference "
            f"(random heatmap {chance:.4f})") in proc.stdout
    assert score > chance


def test_records_input_repeats_training_predictions(run_folder, tmp_path):
    """The run's own validation predictions come back from predict on its records: same preprocessing."""
    result = json.loads((run_folder / runs.RESULT).read_text())
    assert result["classes"] == ["normal", "fluid"]  # its data's, which predict checks records against
    report = predictor.predict(run_folder / "best.keras", result["data_dir"], tmp_path / "p.csv")
    assert report.kind == "records" and len(report.rows) == (result["train_size"] + result["val_size"]
                                                             + result.get("test_size", 0))
    by_key = {(r["volume_id"], r["slice"]): r for r in read_csv(tmp_path / "p.csv")}
    validation = read_csv(run_folder / runs.PREDICTIONS)
    for row in validation:
        mine = by_key[(row["volume_id"], row["slice"])]
        assert mine["label"] == row["label"]
        assert float(mine["p_fluid"]) == pytest.approx(float(row["p_fluid"]), abs=1e-5)


def test_every_input_kind_gives_the_same_probabilities(run_folder, heldout, tmp_path):
    volume = sorted(p for p in heldout.rglob("TRAIN*") if p.is_dir())[0]
    model = run_folder / "best.keras"
    whole = read_csv(_run(model, volume / "oct.mhd", tmp_path / "one"))
    assert [r["volume_id"] for r in whole] == [volume.name] * BSCANS and "label" in whole[0]

    # An .mhd of another name is an unlabelled volume named after the file (its data a link, as git-annex keeps it).
    named = tmp_path / "scan.mhd"
    named.write_text((volume / "oct.mhd").read_text().replace("oct.raw", "scan.raw"))
    os.symlink(volume / "oct.raw", tmp_path / "scan.raw")
    alone = read_csv(_run(model, named, tmp_path / "named"))
    assert {r["volume_id"] for r in alone} == {"scan"} and "label" not in alone[0]
    assert [r["p_fluid"] for r in alone] == [r["p_fluid"] for r in whole]

    # Volumes without reference: no label column.
    bare = tmp_path / "bare" / volume.name
    bare.mkdir(parents=True)
    for name in ("oct.mhd", "oct.raw"):
        shutil.copy(volume / name, bare / name)
    assert "label" not in read_csv(_run(model, tmp_path / "bare", tmp_path / "b"))[0]

    # B-scans saved as PNG files (lossless) predict exactly as in the volume.
    pixels = volumes.to_uint8(sitk.GetArrayFromImage(sitk.ReadImage(str(volume / "oct.mhd"))))
    (tmp_path / "pngs" / "eye").mkdir(parents=True)
    for k in (2, 7):
        Image.fromarray(pixels[k]).save(tmp_path / "pngs" / "eye" / f"b{k}.png")
    pictures = read_csv(_run(model, tmp_path / "pngs", tmp_path / "i"))
    assert [r["volume_id"] for r in pictures] == ["eye/b2", "eye/b7"]
    np.testing.assert_allclose([float(r["p_fluid"]) for r in pictures],
                               [float(whole[k]["p_fluid"]) for k in (2, 7)], atol=1e-6)


def _run(model, input_path, out_dir) -> pathlib.Path:
    report = predictor.predict(model, input_path, out_dir / "p.csv")
    assert report.output == out_dir / "p.csv"
    return report.output


@pytest.fixture(scope="module")
def small_center_model(tmp_path_factory):
    """An untrained 64 px centre-crop SqueezeNet run: enough to test failures and shapes."""
    return fake_run(tmp_path_factory.mktemp("fake") / "run", image_size=64, crop="center")


@pytest.fixture
def tiny_volume(tmp_path):
    """A 3 x 40 x 48 uint16 volume with reference: too small for a 64 px centre crop."""
    from conftest import write_volume

    return write_volume(tmp_path / "tiny" / "TRAIN001", np.full((3, 40, 48), 30000, np.uint16),
                        np.zeros((3, 40, 48), np.uint8))


def _bad_cases(tmp_path, model, tiny_volume, heldout):
    """(model, input, gradcam_dir, error type, message) for each kind of bad input."""
    no_config = tmp_path / "elsewhere" / "model.keras"
    no_config.parent.mkdir()
    shutil.copy(model, no_config)
    garbage = tmp_path / "garbage" / "best.keras"
    garbage.parent.mkdir()
    garbage.write_text("not a model")
    shutil.copy(model.parent / runs.RESULT, garbage.parent / runs.RESULT)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    (tmp_path / "empty").mkdir()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "old.png").write_bytes(b"x")
    volume = sorted(p for p in heldout.rglob("TRAIN*") if p.is_dir())[0]
    return [
        (no_config, volume, None, predictor.ModelError, f"{no_config}: not an octtl model: no result.json beside it"),
        (garbage, volume, None, predictor.ModelError, f"{garbage}: not an octtl model: Keras cannot load it"),
        (tmp_path / "none.keras", volume, None, predictor.ModelError, "none.keras: no such model file"),
        (model, text, None, InputError, f"{text}: not an input predict can read; expected a .mhd volume"),
        (model, tmp_path / "empty", None, InputError, "empty: holds nothing predict can read"),
        (model, tmp_path / "missing", None, InputError, "missing: does not exist"),
        (model, tiny_volume, None, InputError,
         "oct.mhd: B-scans of 40x48 pixels are smaller than the 64x64 centre crop this squeezenet model"),
        (model, volume, busy, InputError, "busy: folder exists and is not empty (pass --overwrite"),
    ]


def test_bad_inputs_fail_clearly_and_write_nothing(small_center_model, tiny_volume, heldout, tmp_path):
    for model, input_path, gradcam_dir, error, message in _bad_cases(tmp_path, small_center_model, tiny_volume,
                                                                     heldout):
        out = tmp_path / "out"
        with pytest.raises(error) as info:
            predictor.predict(model, input_path, out / "p.csv", gradcam_dir=gradcam_dir)
        assert message in str(info.value) and "\n" not in str(info.value)
        assert not out.exists() or not any(out.iterdir()), list(out.iterdir())
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["old.png"]


def test_failure_midway_leaves_no_partial_output(small_center_model, tiny_volume, heldout, tmp_path):
    """A bad second volume after a good one: no CSV, no Grad-CAM folder, no temporary leftovers."""
    mixed = tmp_path / "mixed"
    volume = sorted(p for p in heldout.rglob("TRAIN*") if p.is_dir())[0]
    shutil.copytree(volume, mixed / "a" / volume.name)
    shutil.copytree(tiny_volume, mixed / "b" / tiny_volume.name)
    out = tmp_path / "out"
    with pytest.raises(InputError, match="smaller than the 64x64 centre crop"):
        predictor.predict(small_center_model, mixed, out / "p.csv", gradcam_dir=out / "cam")
    assert not out.exists()  # not even the folder it would have written into


def test_cli_error_is_one_line(small_center_model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, _ = run_main(predict, f"--model={small_center_model}", f"--input={text}",
                          f"--output={tmp_path / 'p.csv'}")
    assert code == (f"predict: error: {text}: not an input predict can read; expected a .mhd volume, a folder "
                    "of volumes (oct.mhd), a TFRecord folder (bscans-*-of-*.tfrecord) or image files (.png, .jpg, "
                    ".jpeg, .tif, .tiff, .bmp)")
    assert not (tmp_path / "p.csv").exists()


def test_centre_crop_model_on_large_bscans(small_center_model, tmp_path):
    """Unlabelled volume, centre crop: one row per B-scan, probabilities as the model gives them."""
    from conftest import write_volume

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 256, (4, 80, 100), dtype=np.uint8)
    write_volume(tmp_path / "in" / "EYE1", volume)
    report = predictor.predict(small_center_model, tmp_path / "in", tmp_path / "p.csv", gradcam_dir=tmp_path / "cam",
                           threshold=0.0)
    assert report.metrics is None and report.explained.pointing_game is None
    rows = read_csv(tmp_path / "p.csv")
    assert list(rows[0]) == ["volume_id", "slice", "p_fluid", "prediction", "source"] and len(rows) == 4
    model = keras.saving.load_model(small_center_model)
    crops = pipeline.crop(volume[..., None], 64, "center")  # the model scales its 0..255 inputs itself
    np.testing.assert_allclose([float(r["p_fluid"]) for r in rows], model.predict(crops, verbose=0)[:, 1],
                               atol=1e-6)
    pngs = sorted((tmp_path / "cam").glob("*.png"))
    assert len(pngs) == 4  # threshold 0: every B-scan is predicted fluid
    # The crop's outline, on the B-scan pixels just outside what octtl.data.pipeline.crop gives the network.
    shown = pipeline.crop(np.arange(80 * 100).reshape(80, 100, 1), 64, "center").numpy()
    rows, cols = np.divmod(shown, 100)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    outline = np.zeros((80, 100), bool)
    outline[[top - 1, bottom], left - 1:right + 1] = outline[top - 1:bottom + 1, [left - 1, right]] = True
    for png in pngs:
        with Image.open(png) as picture:
            np.testing.assert_array_equal(np.all(np.asarray(picture) == (255, 0, 255), axis=-1), outline)


@pytest.mark.parametrize("slices, text", [([], ""), ([4], "4"), ([3, 4, 5, 9], "3-5 9"), ([0, 2, 3], "0 2-3")])
def test_fluid_slices_are_written_as_runs_and_read_back(slices, text):
    assert predictor.format_slices(slices) == text
    assert predictor.parse_slices(text) == slices


def test_accuracy_majority_rate_and_auc_of_labelled_predictions():
    m = predictor.metrics([0, 0, 1, 1, 1], [0.1, 0.7, 0.8, 0.9, 0.4], 0.5)
    assert m == {"n": 5, "accuracy": 0.6, "majority_rate": 0.6, "auc": pytest.approx(5 / 6)}
    assert predictor.metrics([1, 1], [0.2, 0.9], 0.5)["auc"] is None


def test_existing_outputs_are_refused_before_tensorflow_and_replaced_with_overwrite(small_center_model, tmp_path):
    from conftest import write_volume

    write_volume(tmp_path / "in" / "EYE1", np.random.default_rng(1).integers(0, 256, (2, 70, 70), dtype=np.uint8))
    out = tmp_path / "p.csv"
    out.write_text("mine\n")
    # The refusal comes before TensorFlow is imported: the process never loads it.
    probe = ("import sys; from octtl.inference import predictor\n"
             "try:\n"
             f"    predictor.check_outputs({str(out)!r})\n"
             "except Exception as e:\n"
             "    print(e)\n"
             "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.stdout.splitlines() == [f"--output={out}: file exists (pass --overwrite to replace it)", "False"]
    with pytest.raises(InputError, match="file exists"):
        predictor.predict(small_center_model, tmp_path / "in", out)
    assert out.read_text() == "mine\n"
    report = predictor.predict(small_center_model, tmp_path / "in", out, gradcam_dir=tmp_path / "cam",
                                overwrite=True)
    assert len(read_csv(out)) == 2 and report.output == out
    # A second run into the same Grad-CAM folder replaces it as a whole.
    (tmp_path / "cam" / "stale.png").write_bytes(b"x")
    predictor.predict(small_center_model, tmp_path / "in", out, gradcam_dir=tmp_path / "cam", overwrite=True)
    assert not (tmp_path / "cam" / "stale.png").exists() and (tmp_path / "cam" / "gradcam.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cam", "in", "p.csv", "p_volumes.csv"]


def test_predict_refuses_what_it_would_misread_and_says_what_it_can_do_instead(tmp_path):
    """Records of other classes than the model's (OCT2017's four for a normal/fluid model, whose CNV and DRUSEN
    would count as fluid), and a volume larger than predict reads: one line each, nothing written."""
    rng = np.random.default_rng(1)
    four = ["NORMAL", "DME", "CNV", "DRUSEN"]
    for name in four:
        (tmp_path / "oct2017" / name).mkdir(parents=True)
        image = Image.fromarray(rng.integers(0, 255, (40, 48), dtype=np.uint8))
        image.save(tmp_path / "oct2017" / name / f"{name}-1.png")
    for classes in (four, four[:2]):
        code, _, err = run_main(to_tfrecord, "--input_format=image_folders", f"--classes={','.join(classes)}",
                                f"--input_dir={tmp_path / 'oct2017'}", f"--output_dir={tmp_path / str(len(classes))}")
        assert code == 0, err
    model = fake_run(tmp_path / "run", arch="tiny", image_size=32)  # its result.json has no classes: normal, fluid
    out = tmp_path / "out"
    text = refusal(predict, f"--model={model}", f"--input={tmp_path / '4'}", f"--output={out / 'p.csv'}")
    assert text.startswith(f"{tmp_path / '4' / 'manifest.json'}: classes NORMAL, DME, CNV, DRUSEN are not the "
                           "model's (normal, fluid)")
    result = json.loads((model.parent / runs.RESULT).read_text())
    (model.parent / runs.RESULT).write_text(json.dumps({**result, "classes": four[:2]}))
    assert refusal(predict, f"--model={model}", f"--input={tmp_path / '4'}", f"--output={out / 'p.csv'}")
    assert run_main(predict, f"--model={model}", f"--input={tmp_path / '2'}", f"--output={tmp_path / 'p.csv'}")[0] == 0

    big = write_volume(tmp_path / "big" / "V1", np.zeros((2, 40, 48), np.uint8)) / "oct.mhd"
    big.write_text(big.read_text().replace("DimSize = 48 40 2", "DimSize = 100000 100000 1000"))
    text = refusal(predict, f"--model={model}", f"--input={big}", f"--output={out / 'p.csv'}")
    assert text.startswith(f"{big}: header promises 10000000000000 bytes (DimSize 100000 100000 1000 MET_UCHAR), "
                           "more than the 8589934592 bytes predict reads from one volume; predict on its B-scans as "
                           "image files, or on records converted with python tools/to_tfrecord.py "
                           "--max_volume_bytes=10000000000000"), text
    assert not out.exists()
