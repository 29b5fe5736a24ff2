"""The paper's future work in use: --augment and --denoise through training, predict, export and the sweep's plan.

The library parts have their own tests (test_augment.py, test_denoise.py, test_variants.py); these check that
the pieces meet: validation never augmented, runs reproducible, one denoising in training, predict and export,
and the sweep's variant axes.
"""

import csv
import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from conftest import run_main, synthetic_records
from octtl import runs, sweep, train
from octtl.data import pipeline
from octtl.inference import savedmodel
from octtl.inference import predictor
from octtl.data import records
from octtl.training import session
from octtl.errors import InputError
from octtl.training.config import Config

QUIET = dict(say=lambda line: None, progress=False)


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    """8 synthetic volumes of 6 B-scans, 72 x 80: 48 examples."""
    return synthetic_records(tmp_path_factory.mktemp("variant-data"), volumes=8, bscans=6, height=72, width=80, seed=2)


def tiny(records_dir, logdir, **changes):
    values = dict(data_dir=str(records_dir), logdir=str(logdir), arch="tiny", batch=8, folds=4, image_size=48,
                  max_epochs=2, weights="none")
    return Config(**{**values, **changes})


def test_augmentation_changes_training_only_and_repeats_for_a_seed(records_dir, tmp_path):
    plain = session.Session(tiny(records_dir, tmp_path / "plain"), **QUIET)
    augmented = session.Session(tiny(records_dir, tmp_path / "aug", augment="flip,shift,scale,intensity,speckle"),
                                 **QUIET)
    first = augmented.run("baseline", 0)
    assert first["augment"] == ["flip", "intensity", "scale", "shift", "speckle"]
    assert "aug_flip+intensity+scale+shift+speckle" in first["run_dir"]
    base = plain.run("baseline", 0)
    # Validation sees the very crops a run without augmentation sees; only the training batches change.
    assert augmented.margin > 0 and augmented.decoded.images.shape[1] == 48 + 2 * augmented.margin
    np.testing.assert_array_equal(augmented.decoded.crops, plain.decoded.images)
    assert [c["val_loss"] for c in first["checks"]] != [c["val_loss"] for c in base["checks"]]
    again = session.Session(tiny(records_dir, tmp_path / "again", augment="flip,shift,scale,intensity,speckle"),
                             **QUIET).run("baseline", 0)
    assert again["checks"] == first["checks"]  # the same seed, the same augmented batches


@pytest.fixture(scope="module")
def denoised_run(records_dir, tmp_path_factory):
    """A tiny network trained on median-denoised B-scans; (run folder, result)."""
    logdir = tmp_path_factory.mktemp("denoised")
    result = session.train(tiny(records_dir, logdir, denoise="median", denoise_strength=5, max_epochs=1), 0,
                            **QUIET)
    assert result["denoise"] == "median" and result["denoise_strength"] == 5.0 and result["decode_seconds"] > 0
    return result


def test_training_decodes_denoised_b_scans(records_dir, denoised_run):
    from octtl.data import denoise

    meta = records.read_metadata(records_dir)
    plain = pipeline.decode(records_dir, meta, 48, "center")
    filtered = pipeline.decode(records_dir, meta, 48, "center",
                           prefilter=lambda image: denoise.denoise(image, "median", 5))
    assert not np.array_equal(plain.images, filtered.images)
    # Denoised before cropping: the crop of the denoised B-scan, not the denoised crop.
    first = next(records.examples(records.shard_paths(records_dir), [records.IMAGE]))
    whole = tf.io.decode_png(first[records.IMAGE], channels=1).numpy()
    expected = pipeline.crop(denoise.denoise(whole, "median", 5), 48, "center").numpy()
    np.testing.assert_array_equal(filtered.images[0], expected)


def test_predict_and_export_denoise_as_training_did(records_dir, denoised_run, tmp_path):
    model = f"{denoised_run['run_dir']}/best.keras"
    report = predictor.predict(model, records_dir, tmp_path / "p.csv")
    by_key = {(r["volume_id"], r["slice"]): float(r["p_fluid"]) for r in report.rows}
    with open(f"{denoised_run['run_dir']}/predictions.csv", newline="") as f:
        validation = list(csv.DictReader(f))
    np.testing.assert_allclose([by_key[(r["volume_id"], int(r["slice"]))] for r in validation],
                               [float(r["p_fluid"]) for r in validation], atol=1e-5)

    savedmodel.export(model, tmp_path / "export")
    serve = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    volume = records.read_metadata(records_dir).volume_ids[0]
    scans = next(s for s in predictor.read_input(records_dir) if s.volume_id == volume)
    served = serve(bscans=tf.constant(np.stack(scans.images)))["p_fluid"].numpy()
    np.testing.assert_allclose(served, [by_key[(volume, int(k))] for k in scans.slices], atol=1e-5)


def test_export_refuses_a_denoising_it_cannot_write_in_tensorflow(records_dir, denoised_run, tmp_path):
    folder = tmp_path / "nlm"
    folder.mkdir()
    result = json.loads((pathlib.Path(denoised_run["run_dir"]) / runs.RESULT).read_text())
    (folder / runs.RESULT).write_text(json.dumps({**result, "denoise": "nlm", "denoise_strength": None}))
    (folder / runs.BEST_MODEL).write_bytes((pathlib.Path(denoised_run["run_dir"]) / runs.BEST_MODEL)
                                           .read_bytes())
    with pytest.raises(InputError, match=r"--model=.*: its run used --denoise=nlm cannot be written in TensorFlow"):
        savedmodel.export(folder / runs.BEST_MODEL, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_sweep_plans_variant_axes_and_skips_finished_variants(records_dir, tmp_path):
    common = [f"--data_dir={records_dir}", f"--logdir={tmp_path}", "--archs=squeezenet", "--batches=8",
              "--designs=baseline", "--folds=3", "--image_size=32", "--max_epochs=1", "--weights=none"]
    axes = ["--lrs=1e-4,3e-4", "--augments=none", "--augments=flip,shift"]
    # One variant's fold trained before, as octtl.train trains it: the sweep finds it done in its variant folder.
    code, _, err = run_main(train, *common[:2], "--arch=squeezenet", "--batch=8", "--folds=3", "--image_size=32",
                            "--max_epochs=1", "--weights=none", "--lr=3e-4", "--augment=shift,flip", "--fold=2")
    assert code == 0, err
    assert (tmp_path / "baseline/squeezenet/batch8/lr0.0003-aug_flip+shift/fold2" / runs.RESULT).is_file()
    code, out, err = run_main(sweep, *common, *axes, "--dry_run")
    assert code == 0, err
    # 1 network x 1 batch x 1 design x 3 folds x 2 learning rates x 2 augmentation variants.
    assert "plan: 12 runs: 1 done (0 failed), 0 stale, 11 to do" in out, out
