"""Keeps tests quiet and off the home directory."""

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="octtl-test-home-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ["MPLCONFIGDIR"] = os.path.join(_HOME, "mpl")
os.environ.setdefault("MPLBACKEND", "Agg")

import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


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
