"""Tests of octtl/volumes.py: the 8-bit rule, vendor inference, per-B-scan labels."""

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_volume
from octtl import volumes


def test_uint16_maps_linearly_over_full_range():
    values = np.arange(0, 65536, dtype=np.uint16)
    expected = np.floor(values.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(volumes.to_uint8(values), expected)
    assert volumes.to_uint8(np.array([0, 65535], np.uint16)).tolist() == [0, 255]


@pytest.mark.parametrize("values, expected", [
    (np.array([0, 7, 255], np.uint8), [0, 7, 255]),
    (np.array([0.0, 0.5, 1.0], np.float32), [0, 128, 255]),
    (np.array([-2.0, 0.0, 2.0], np.float64), [0, 128, 255]),  # out of [0, 1]: min-max
    (np.array([100, 300, 500], np.int16), [0, 128, 255]),
    (np.array([5.0, 5.0], np.float32), [0, 0]),
])
def test_to_uint8_rules(values, expected):
    assert volumes.to_uint8(values).tolist() == expected


def test_to_uint8_rejects_nan():
    with pytest.raises(volumes.InputError, match="NaN"):
        volumes.to_uint8(np.array([0.0, np.nan]))


@pytest.mark.parametrize("shape, spacing, vendor", [
    ((49, 496, 512), 1.0, "spectralis"),
    ((128, 1024, 512), 1.0, "cirrus"),
    ((128, 885, 512), 1.0, "topcon"),
    ((128, 650, 512), 1.0, "topcon"),
    ((10, 300, 300), 0.0039, "spectralis"),
    ((10, 300, 300), 0.00196, "cirrus"),
    ((10, 300, 300), 0.0035, "topcon"),
    ((10, 300, 300), 0.01, "unknown"),
])
def test_vendor_from_geometry(shape, spacing, vendor):
    assert volumes.vendor_from_geometry(shape, spacing) == vendor


def test_vendor_from_path_and_header(tmp_path):
    named = write_volume(tmp_path / "RETOUCH-TestSet-Topcon" / "TEST01", np.zeros((2, 8, 8), np.uint8))
    assert volumes.peek_vendor(named) == "topcon"
    unnamed = write_volume(tmp_path / "clinic" / "eye1", np.zeros((2, 8, 8), np.uint8),
                           spacing=(0.01, 0.00195, 0.05))
    assert volumes.vendor_from_path(unnamed) is None
    assert volumes.peek_vendor(unnamed) == "cirrus"


def test_fluid_labels_and_counts_recomputed():
    rng = np.random.default_rng(1)
    reference = rng.choice(4, size=(7, 9, 11), p=[0.97, 0.01, 0.01, 0.01]).astype(np.uint8)
    counts = volumes.fluid_counts(reference)
    for code, kind in ((1, "irf"), (2, "srf"), (3, "ped")):
        assert counts[kind].tolist() == [int((b == code).sum()) for b in reference]
    for codes, minimum in (((1, 2, 3), 1), ((2,), 1), ((1, 3), 2)):
        expected = [int(np.isin(b, codes).sum() >= minimum) for b in reference]
        assert volumes.fluid_labels(reference, codes, minimum).tolist() == expected


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_read_volume_types_and_compression(tmp_path, dtype):
    rng = np.random.default_rng(2)
    if dtype == np.float32:
        oct_array = rng.random((3, 10, 12)).astype(dtype)
    else:
        oct_array = rng.integers(0, np.iinfo(dtype).max, (3, 10, 12), endpoint=True).astype(dtype)
    reference = np.zeros(oct_array.shape, np.uint8)
    reference[1, 2:4, 3:6] = 2
    folder = tmp_path / "vol"
    folder.mkdir()
    for name, array in (("oct", oct_array), ("reference", reference)):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.mhd"), useCompression=True)
    assert (folder / "oct.zraw").is_file()
    bscans = volumes.read_volume(folder)
    np.testing.assert_array_equal(bscans.images, volumes.to_uint8(oct_array))
    assert bscans.labels.tolist() == [0, 1, 0]
    assert bscans.srf.tolist() == [0, 6, 0]
    assert bscans.volume_id == "vol"
