"""Tests of octtl/data/volumes.py and octtl/data/metaimage.py: the 8-bit rule, vendor inference, per-B-scan labels, finding
and checking volumes (headers and data bytes before any voxel is read)."""

import os
import pathlib
import re
import tracemalloc
import zlib

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_volume
from octtl.data import metaimage
from octtl.data import volumes


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
def test_the_8bit_rule_per_element_type(values, expected):
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


def _volume(folder):
    return write_volume(folder, np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8))


def test_find_volumes_follows_folder_links_once(tmp_path):
    """Linked folders are walked, loops once, and a volume reached by two paths counts once, by its real path."""
    outside = _volume(tmp_path / "store" / "eye7")
    root = tmp_path / "in"
    real = _volume(root / "RETOUCH-TestSet-Topcon" / "TEST01")
    (root / "RETOUCH-TrainingSet-Cirrus").mkdir()
    (root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001").symlink_to(outside, target_is_directory=True)
    (root / "again").symlink_to(root / "RETOUCH-TestSet-Topcon", target_is_directory=True)  # same volume
    (root / "RETOUCH-TestSet-Topcon" / "loop").symlink_to(root, target_is_directory=True)
    (root / "a-second-path").symlink_to(outside, target_is_directory=True)
    # Of two link paths to one volume, the first in path order.
    assert volumes.find_volumes(root) == [real, root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001"]
    assert volumes.peek_vendor(root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001") == "cirrus"


def test_dangling_oct_mhd_link_is_an_error(tmp_path):
    folder = tmp_path / "in" / "TRAIN003"
    folder.mkdir(parents=True)
    (folder / "oct.mhd").symlink_to(tmp_path / "gone" / "oct.mhd")
    with pytest.raises(volumes.InputError, match=f"^{folder / 'oct.mhd'}: broken link to "):
        volumes.find_volumes(tmp_path / "in")


def test_unlistable_subfolder_is_skipped_aloud(tmp_path, monkeypatch, capsys):
    """A root-only lost+found under the input must not stop the search (tests run as root: refusal is simulated)."""
    real = _volume(tmp_path / "in" / "TRAIN004")
    (tmp_path / "in" / "lost+found").mkdir()
    scandir = os.scandir

    def refuse(path):
        if pathlib.Path(path).name == "lost+found":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(volumes.os, "scandir", refuse)
    assert volumes.find_volumes(tmp_path / "in") == [real]
    assert capsys.readouterr().err == f"{tmp_path / 'in' / 'lost+found'}: cannot be read, skipped (Permission denied)\n"
    with pytest.raises(volumes.InputError, match="lost.found: input directory cannot be read"):
        volumes.find_volumes(tmp_path / "in" / "lost+found")


def test_predict_reads_a_volume_behind_a_folder_link(tmp_path):
    from octtl.inference import inputs

    volume = _volume(tmp_path / "store" / "TRAIN009")
    root = tmp_path / "in"
    root.mkdir()
    (root / "TRAIN009").symlink_to(volume, target_is_directory=True)
    assert inputs.input_kind(root) == "volumes"
    assert [(s.volume_id, len(s.images)) for s in inputs.read_input(root)] == [("TRAIN009", 2)]


def _compressed(folder):
    """A uint16 volume written as .zraw (with reference), for editing its bytes."""
    folder.mkdir(parents=True)
    oct_array = np.random.default_rng(5).integers(0, 65536, (6, 10, 12), dtype=np.uint16)
    for name, array in (("oct", oct_array), ("reference", np.zeros(oct_array.shape, np.uint8))):
        sitk.WriteImage(sitk.GetImageFromArray(array), str(folder / f"{name}.mhd"), useCompression=True)
    return folder


def _set(header, key, value):
    """Sets (or, with value None, deletes) one `Key = Value` line of a MetaImage header."""
    lines = [line for line in header.read_text().splitlines() if not line.startswith(f"{key} =")]
    if value is not None:
        lines.insert(1, f"{key} = {value}")
    header.write_text("\n".join(sorted(lines, key=lambda line: line.startswith("ElementDataFile"))) + "\n")


def _zraw_bytes(folder, edit):
    zraw = folder / "oct.zraw"
    zraw.write_bytes(edit(zraw.read_bytes()))
    _set(folder / "oct.mhd", "CompressedDataSize", None)
    return zraw


# Each case edits a compressed volume's bytes or header; the check must name the file and what is wrong.
COMPRESSED_FAULTS = {
    "corrupt_stream": (lambda f: _zraw_bytes(f, lambda b: b[:40] + bytes(255 - x for x in b[40:80]) + b[80:]),
                       "oct.zraw", "corrupt compressed data"),
    "cut_short": (lambda f: _zraw_bytes(f, lambda b: b[: len(b) // 2]), "oct.zraw",
                  r"ends early, after \d+ of the 1440 bytes oct.mhd promises \(DimSize 12 10 6 MET_USHORT\)$"),
    "trailing_bytes": (lambda f: _zraw_bytes(f, lambda b: b + b"\0\0\0"), "oct.zraw",
                       "3 bytes follow the end of the compressed data"),
    "not_zlib": (lambda f: _zraw_bytes(f, lambda b: b"\x00" * len(b)), "oct.zraw", "corrupt compressed data"),
    "inflates_longer": (lambda f: _set(f / "oct.mhd", "DimSize", "12 10 3"), "oct.zraw",
                        r"inflates to more than the 720 bytes oct.mhd promises \(DimSize 12 10 3 MET_USHORT\)$"),
    "inflates_shorter": (lambda f: _set(f / "oct.mhd", "DimSize", "12 10 60"), "oct.zraw",
                         r"inflates to 1440 of the 14400 bytes oct.mhd promises \(DimSize 12 10 60 MET_USHORT\)$"),
    "compressed_size": (lambda f: _set(f / "oct.mhd", "CompressedDataSize", "17"), "oct.zraw",
                        r"holds \d+ bytes of compressed data, but CompressedDataSize = 17"),
}


@pytest.mark.parametrize("case", sorted(COMPRESSED_FAULTS))
def test_compressed_data_must_inflate_to_the_header_size(tmp_path, case):
    edit, subject, message = COMPRESSED_FAULTS[case]
    folder = _compressed(tmp_path / "vol")
    edit(folder)
    with pytest.raises(volumes.InputError) as error:
        volumes.read_volume(folder)
    assert str(error.value).startswith(f"{folder / subject}: ")
    assert re.search(message, str(error.value)), str(error.value)


def test_compressed_bomb_is_refused_without_inflating_it(tmp_path):
    folder = _compressed(tmp_path / "vol")
    packer, zeros = zlib.compressobj(1), bytes(1 << 20)
    bomb = b"".join(packer.compress(zeros) for _ in range(128)) + packer.flush()  # 128 MiB in ~0.5 MB
    (folder / "oct.zraw").write_bytes(bomb)
    _set(folder / "oct.mhd", "CompressedDataSize", None)
    tracemalloc.start()
    try:
        with pytest.raises(volumes.InputError, match="inflates to more than the 1440 bytes"):
            volumes.read_volume(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_header_size_and_local_data(tmp_path):
    """HeaderSize skips bytes before the data, -1 puts it at the file's end, LOCAL data follows the header."""
    array = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    skip = write_volume(tmp_path / "skip", array)
    raw = skip / "oct.raw"
    raw.write_bytes(b"preamble" + raw.read_bytes())
    _set(skip / "oct.mhd", "HeaderSize", "8")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(metaimage.read_image(skip / "oct.mhd")), array)
    _set(skip / "oct.mhd", "HeaderSize", "-1")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(metaimage.read_image(skip / "oct.mhd")), array)
    raw.write_bytes(raw.read_bytes() + b"x")
    _set(skip / "oct.mhd", "HeaderSize", "8")
    with pytest.raises(volumes.InputError, match=f"^{raw}: longer than its header says, expected 56 bytes"):
        metaimage.read_image(skip / "oct.mhd")
    local = tmp_path / "local.mha"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(local))
    assert metaimage.inspect_image(local) == (2, 3, 4)
    with open(local, "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(volumes.InputError, match=f"^{local}: longer than its header says"):
        metaimage.inspect_image(local)


@pytest.mark.parametrize("key, value, message", [
    ("DimSize", "12 10 0", "DimSize = 12 10 0 must be 3 integers > 0"),
    ("DimSize", "12 -10 6", "DimSize = 12 -10 6 must be 3 integers > 0"),
    ("DimSize", "12 10", "DimSize = 12 10 must be 3 integers > 0"),
    ("DimSize", "12 10 6 1", "DimSize = 12 10 6 1 must be 3 integers > 0"),
    ("DimSize", "12 10 six", "DimSize = 12 10 six must be 3 integers > 0"),
    ("NDims", "4", "expected a 3-D volume, got 4-D"),
    ("NDims", "three", "NDims = three is not an integer"),
    ("ElementNumberOfChannels", "3", "expected one value per voxel, got ElementNumberOfChannels = 3"),
    ("HeaderSize", "-5", "HeaderSize = -5 must be -1, 0 or more"),
    ("ElementDataFile", "LIST 2D", "ElementDataFile = LIST 2D: data split over several files is not supported"),
])
def test_header_values_checked_before_reading(tmp_path, key, value, message):
    folder = _compressed(tmp_path / "vol")
    _set(folder / "oct.mhd", key, value)
    with pytest.raises(volumes.InputError) as error:
        volumes.read_volume(folder)
    assert str(error.value).startswith(f"{folder / 'oct.mhd'}: {message}"), str(error.value)


@pytest.mark.parametrize("name", ["oct.mhd", "reference.mhd"])
def test_max_volume_bytes_checked_before_reading(tmp_path, name):
    """A tiny .zraw whose header claims 512 x 496 x 6000 is refused from the header, not after allocating 3 GB."""
    folder = _compressed(tmp_path / "vol")
    _set(folder / name, "DimSize", "512 496 6000")
    with pytest.raises(volumes.InputError) as error:
        volumes.read_volume(folder, max_volume_bytes=1 << 30)
    bytes_per_voxel = 2 if name == "oct.mhd" else 1
    assert str(error.value) == (f"{folder / name}: header promises {512 * 496 * 6000 * bytes_per_voxel} bytes "
                                f"(DimSize 512 496 6000 {'MET_USHORT' if name == 'oct.mhd' else 'MET_UCHAR'}), "
                                "more than --max_volume_bytes=1073741824")


def test_images_in_subfolders_of_a_class_folder_are_taken_as_predict_takes_them(tmp_path):
    """A class folder kept by patient (NORMAL/patient7/a.png): every image under it counts, none is left out."""
    files = ["NORMAL/n1.png", "NORMAL/patient7/n2.png", "NORMAL/patient7/visit2/n3.tif", "DME/d1.png",
             "DME/patient9/d2.jpeg", "DME/patient9/notes.txt"]
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items = volumes.find_images(tmp_path, ["NORMAL", "DME"])
    assert [(item.path.relative_to(tmp_path).as_posix(), item.label) for item in items] == [
        ("NORMAL/n1.png", 0), ("NORMAL/patient7/n2.png", 0), ("NORMAL/patient7/visit2/n3.tif", 0),
        ("DME/d1.png", 1), ("DME/patient9/d2.jpeg", 1)]
