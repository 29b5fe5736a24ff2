"""Tests of `python -m octtl.export`: the SavedModel is loaded in a fresh Python process that cannot import
octtl, fed raw uint8 B-scans of several sizes, and must give the Keras model's probabilities."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import fake_run, run_main
from octtl import export
from octtl.inference import savedmodel
from octtl.inference import predictor
from octtl.data import volumes

# Runs with `python -I` (no PYTHONPATH, no user site, no current directory on sys.path) and refuses any import
# of octtl, so the graph must stand on TensorFlow alone.
SERVE = r"""
import importlib.abc, json, sys


class NoOcttl(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "octtl" or name.startswith("octtl."):
            raise ImportError("serving must not need octtl")


sys.meta_path.insert(0, NoOcttl())
import numpy as np
import tensorflow as tf

report = {}
for job in json.loads(sys.argv[1]):
    serve = tf.saved_model.load(job["model"]).signatures["serving_default"]
    spec = serve.structured_input_signature[1]["bscans"]
    try:
        p = serve(bscans=tf.constant(np.load(job["input"])))["p_fluid"]
        np.save(job["output"], p.numpy())
        result = "ok"
    except tf.errors.InvalidArgumentError as e:
        result = e.message
    report[job["output"]] = {"result": result, "dtype": spec.dtype.name, "shape": spec.shape.as_list()}
report["octtl imported"] = any(m == "octtl" or m.startswith("octtl.") for m in sys.modules)
print(json.dumps(report))
"""


def serve_in_fresh_process(jobs, cwd) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run([sys.executable, "-I", "-c", SERVE, json.dumps(jobs)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def keras_p_fluid(model_path, bscans) -> np.ndarray:
    model, config = predictor.load_model(model_path)
    predict = predictor.Predictor(model, config)
    return predict(predict.inputs(list(bscans)))


@pytest.fixture(scope="module")
def trained_model(trained_run):
    return trained_run / "best.keras"


def test_saved_models_serve_like_keras_without_octtl(trained_model, heldout, tmp_path):
    # The trained model (resize crop, ImageNet scaling) through the CLI ...
    code, out, err = run_main(export, f"--model={trained_model}", f"--output={tmp_path / 'trained' / '1'}")
    assert code == 0, err[-3000:]
    assert "serving_default takes uint8 bscans" in out
    metadata = json.loads((tmp_path / "trained" / "1" / savedmodel.EXPORT_METADATA).read_text())
    assert (metadata["arch"], metadata["crop"], metadata["preprocess"]) == ("squeezenet", "resize", "backbone")
    # ... and an untrained centre-crop model with the paper's [-1, 1] scaling through the library.
    center = fake_run(tmp_path / "run", arch="resnet18", image_size=64, crop="center", preprocess="paper")
    savedmodel.export(center, tmp_path / "center")

    folder = sorted(p for p in heldout.rglob("TRAIN*") if p.is_dir())[0]
    heldout = volumes.to_uint8(sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "oct.mhd"))))[:12]
    rng = np.random.default_rng(0)
    cases = {
        "trained_heldout": (trained_model, tmp_path / "trained" / "1", heldout),
        "trained_wide": (trained_model, tmp_path / "trained" / "1", rng.integers(0, 256, (3, 150, 231), np.uint8)),
        "center_heldout": (center, tmp_path / "center", heldout),
        "center_odd": (center, tmp_path / "center", rng.integers(0, 256, (2, 81, 100), np.uint8)),
        "center_small": (center, tmp_path / "center", rng.integers(0, 256, (2, 40, 100), np.uint8)),
    }
    jobs = []
    for name, (_, saved, bscans) in cases.items():
        np.save(tmp_path / f"{name}.in.npy", bscans)
        jobs.append({"model": str(saved), "input": str(tmp_path / f"{name}.in.npy"),
                     "output": str(tmp_path / f"{name}.out.npy")})
    report = serve_in_fresh_process(jobs, cwd=tmp_path)

    assert report["octtl imported"] is False
    for name, (model, _, bscans) in cases.items():
        outcome = report[str(tmp_path / f"{name}.out.npy")]
        assert (outcome["dtype"], outcome["shape"]) == ("uint8", [None, None, None])
        if name == "center_small":
            assert "B-scans must be at least 64x64 pixels for the centre crop of this model" in outcome["result"]
            continue
        assert outcome["result"] == "ok", (name, outcome)
        served = np.load(tmp_path / f"{name}.out.npy")
        np.testing.assert_allclose(served, keras_p_fluid(model, bscans), atol=1e-5, err_msg=name)
    assert np.ptp(np.load(tmp_path / "trained_heldout.out.npy")) > 0.1  # a real test: outputs differ


def test_export_refuses_bad_model_and_busy_output(tmp_path):
    model = fake_run(tmp_path / "run", image_size=32)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    code, _, _ = run_main(export, f"--model={model}", f"--output={tmp_path / 'busy'}")
    assert code == (f"export: error: --output={tmp_path / 'busy'}: folder exists and is not empty "
                    "(pass --overwrite to replace it)")
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["keep.txt"]
    with pytest.raises(predictor.ModelError, match="no result.json beside it"):
        (tmp_path / "loose").mkdir()
        os.link(model, tmp_path / "loose" / "m.keras")
        savedmodel.export(tmp_path / "loose" / "m.keras", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy", "loose", "run"]  # no staging leftovers
