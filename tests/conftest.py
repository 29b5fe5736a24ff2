"""Keeps tests quiet and off the home directory."""

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="octtl-test-home-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ["MPLCONFIGDIR"] = os.path.join(_HOME, "mpl")
os.environ.setdefault("MPLBACKEND", "Agg")

import pathlib  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# tools/browser.py (headless Chromium) serves the report's browser test and tools/report_screenshot.py only.
sys.path.insert(0, str(REPO / "tools"))
# The SqueezeNet v1.1 ImageNet file packaged with octtl, under the registry's name; the shared copy beside a
# checkout carries another name (tests that need a file under a foreign name copy this one).
SQUEEZENET_H5 = REPO / "octtl" / "nets" / "weights" / "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"


def write_volume(folder, oct_array, reference=None, spacing=(0.0113, 0.0039, 0.12)):
    """Writes oct.mhd/.raw (and reference.mhd/.raw) in RETOUCH layout; spacing is (x, y, z) in mm."""
    import SimpleITK as sitk

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(oct_array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(folder / "oct.mhd"), useCompression=False)
    if reference is not None:
        ref = sitk.GetImageFromArray(reference)
        ref.SetSpacing(spacing)
        sitk.WriteImage(ref, str(folder / "reference.mhd"), useCompression=False)
    return folder


@pytest.fixture
def small_volumes(tmp_path):
    """Three 6-B-scan Spectralis-named volumes, fluid kind i+1 in B-scans 1-3; returns (root, arrays)."""
    rng = np.random.default_rng(7)
    root = tmp_path / "in"
    arrays = {}
    for i in range(3):
        volume = rng.integers(0, 65536, (6, 40, 48), dtype=np.uint16)
        reference = np.zeros(volume.shape, np.uint8)
        reference[1:4, 10:14, 5:15] = i + 1  # 40 voxels of code i+1 in B-scans 1-3
        reference[5, 30, 40] = 3  # a lone PED voxel makes B-scan 5 fluid at min_fluid_voxels=1 only
        vid = f"TRAIN{25 + i:03d}"
        write_volume(root / "RETOUCH-TrainingSet-Spectralis" / vid, volume, reference)
        arrays[vid] = (volume, reference)
    return root, arrays


HELDOUT_VOLUMES, BSCANS, SIDE = 6, 20, 128


def synthetic_records(root, volumes: int, bscans: int, height: int, width: int, seed: int) -> pathlib.Path:
    """Synthetic Spectralis volumes under root/volumes converted to root/records; returns the records folder."""
    from octtl.data import converter
    from octtl.synthetic import render

    root = pathlib.Path(root)
    render.write_dataset(root / "volumes", volumes=volumes, bscans=bscans, height=height, width=width, seed=seed)
    converter.convert(root / "volumes", root / "records", progress=None)
    return root / "records"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> pathlib.Path:
    """Run folder of a SqueezeNet fine-tuned from ImageNet on 12 synthetic volumes (128 px B-scans resized to 96).

    The one trained model of the session (about 10 s on 2 cores): predict, export and Grad-CAM tests share it.
    The run folder is what octtl.train writes (best.keras beside result.json); `auto` scaling is the weights'.
    """
    from octtl.training import session
    from octtl.training.config import Config

    root = tmp_path_factory.mktemp("octtl-trained")
    synthetic_records(root, volumes=12, bscans=BSCANS, height=SIDE, width=SIDE, seed=3)
    config = Config(data_dir=str(root / "records"), logdir=str(root / "runs"), arch="squeezenet", batch=16,
                             folds=5, weights="imagenet", group_by_volume=True, image_size=96, crop="resize",
                             max_epochs=4)
    result = session.train(config, 0, say=lambda line: None, progress=False)
    assert result["status"] == "ok" and result["preprocess"] == "backbone", result
    return pathlib.Path(result["run_dir"])


@pytest.fixture(scope="session")
def heldout(tmp_path_factory) -> pathlib.Path:
    """Six volumes of another seed than the training data: none of them was seen in training."""
    from octtl.synthetic import render

    root = tmp_path_factory.mktemp("octtl-heldout")
    render.write_dataset(root, volumes=HELDOUT_VOLUMES, bscans=BSCANS, height=SIDE, width=SIDE, seed=11)
    return root


def fake_run(folder, arch="squeezenet", image_size=64, crop="center", preprocess="paper") -> pathlib.Path:
    """An untrained model saved as octtl.train saves one (best.keras + result.json); returns the model path."""
    import json

    import keras

    from octtl import runs

    from octtl.nets import models

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1)
    model = models.build(arch, weights="none", image_size=image_size, preprocess=preprocess)
    model.save(folder / runs.BEST_MODEL)
    (folder / runs.RESULT).write_text(json.dumps(
        {"arch": arch, "image_size": image_size, "crop": crop, "preprocess": preprocess, "status": "ok"}))
    return folder / runs.BEST_MODEL


def call_main(module, *args):
    """An entry module's command in-process with these flags: its main, errors as one line and SystemExit(...).

    Every entry module can be imported into one process, so a command's errors are checked without the seconds a
    new Python process spends importing TensorFlow; tests keep subprocesses where the process is the point.
    """
    from absl import flags
    from absl.testing import flagsaver

    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS([module.__name__, *args])
        module.run.guarded([module.__name__])


def run_main(module, *args):
    """`call_main`, with what it printed: returns (exit status or message, stdout, stderr)."""
    import contextlib
    import io

    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            call_main(module, *args)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def refusal(module, *args) -> str:
    """The one line a command must fail with (`<command>: error: <message>`, exit status 1), without the prefix."""
    code, out, err = run_main(module, *args)
    name = module.__name__.rsplit(".", 1)[-1]
    assert isinstance(code, str) and code.startswith(f"{name}: error: "), (code, out[-2000:], err[-2000:])
    assert "\n" not in code and "Traceback" not in err, code
    return code[len(f"{name}: error: "):]


def small_dataset(root, volumes: int = 4):
    """Small uint8 volumes (6 B-scans of 40 x 48, fluid in B-scans 2-3) under root/volumes, converted to
    root/records in-process; returns (volumes folder, records folder)."""
    from octtl import to_tfrecord

    root = pathlib.Path(root)
    rng = np.random.default_rng(5)
    for i in range(volumes):
        volume = rng.integers(0, 255, (6, 40, 48), dtype=np.uint8)
        reference = np.zeros(volume.shape, np.uint8)
        reference[2:4, 10:20, 10:20] = 1
        write_volume(root / "volumes" / f"V{i}", volume, reference)
    code, _, err = run_main(to_tfrecord, f"--input_dir={root / 'volumes'}", f"--output_dir={root / 'records'}")
    assert code == 0, err
    return root / "volumes", root / "records"
