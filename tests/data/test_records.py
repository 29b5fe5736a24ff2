"""Tests of octtl/data/records.py and tools/to_tfrecord.py: schema, counts, image folders, bad input."""

import csv
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import call_main, REPO, write_volume
from octtl.data import records, tfrecord
from octtl import to_tfrecord

INT64_KEYS = ("image/height", "image/width", "image/class/label", "volume/slice",
              "fluid/irf", "fluid/srf", "fluid/ped")
BYTES_KEYS = ("image/encoded", "volume/id", "volume/vendor", "image/source")


def read_examples(records_dir):
    """Every record as a tf.train.Example, in shard-name order."""
    return [tf.train.Example.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(records.shard_paths(records_dir))]


def value(example, key):
    feature = example.features.feature[key]
    return feature.bytes_list.value[0] if key in BYTES_KEYS else feature.int64_list.value[0]


def expected_uint8(volume):
    """The 8-bit rule recomputed independently: round(v * 255 / 65535)."""
    return np.floor(volume.astype(np.float64) * 255.0 / 65535.0 + 0.5).astype(np.uint8)


def test_records_match_volumes_exactly(small_volumes, tmp_path):
    root, arrays = small_volumes
    out = tmp_path / "out"
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}", "--num_shards=2")
    examples = read_examples(out)
    assert len(examples) == 18
    for example in examples:
        assert set(example.features.feature) == set(INT64_KEYS + BYTES_KEYS)
        for key in INT64_KEYS:
            assert len(example.features.feature[key].int64_list.value) == 1, key
        for key in BYTES_KEYS:
            assert len(example.features.feature[key].bytes_list.value) == 1, key
    expected_rows = []
    for vid in sorted(arrays):
        volume, reference = arrays[vid]
        for k in range(len(volume)):
            expected_rows.append((vid, k, volume[k], reference[k]))
    for example, (vid, k, bscan, ref) in zip(examples, expected_rows):
        assert value(example, "volume/id") == vid.encode()
        assert value(example, "volume/slice") == k
        assert value(example, "image/source") == f"{vid}:{k}".encode()
        assert value(example, "volume/vendor") == b"spectralis"
        assert value(example, "fluid/irf") == int((ref == 1).sum())
        assert value(example, "fluid/srf") == int((ref == 2).sum())
        assert value(example, "fluid/ped") == int((ref == 3).sum())
        assert value(example, "image/class/label") == int((ref > 0).any())
        assert (value(example, "image/height"), value(example, "image/width")) == bscan.shape
        png = tf.io.decode_png(value(example, "image/encoded")).numpy()
        assert png.shape == bscan.shape + (1,) and png.dtype == np.uint8
        np.testing.assert_array_equal(png[..., 0], expected_uint8(bscan))

    manifest = json.loads((out / "manifest.json").read_text())
    labels = [value(e, "image/class/label") for e in examples]
    assert manifest["num_examples"] == len(examples) == 18
    assert manifest["num_fluid"] == sum(labels) == 12  # B-scans 1, 2, 3 and the lone voxel's 5
    assert manifest["num_normal"] == 18 - sum(labels)
    assert manifest["classes"] == ["normal", "fluid"]
    assert [v["id"] for v in manifest["volumes"]] == sorted(arrays)
    assert all(v["shape"] == [6, 40, 48] and v["vendor"] == "spectralis" for v in manifest["volumes"])
    assert [s["file"] for s in manifest["shards"]] == ["bscans-00000-of-00002.tfrecord",
                                                       "bscans-00001-of-00002.tfrecord"]
    assert sum(s["num_examples"] for s in manifest["shards"]) == 18
    for shard in manifest["shards"]:
        assert sum(1 for _ in tf.data.TFRecordDataset(str(out / shard["file"]))) == shard["num_examples"]
    assert manifest["flags"]["num_shards"] == 2
    with open(out / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["index", "shard", "volume_id", "slice", "label", "vendor", "irf", "srf", "ped",
                             "source"]
    assert [(r["volume_id"], int(r["slice"]), int(r["label"]), r["source"]) for r in rows] == [
        (value(e, "volume/id").decode(), value(e, "volume/slice"), value(e, "image/class/label"),
         value(e, "image/source").decode()) for e in examples]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial")]


def test_fluid_label_flags(small_volumes, tmp_path):
    root, arrays = small_volumes
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'srf'}", "--fluid_labels=2")
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'min2'}", "--min_fluid_voxels=2")
    srf = [value(e, "image/class/label") for e in read_examples(tmp_path / "srf")]
    # Only TRAIN026 holds SRF (code 2), in its B-scans 1-3.
    assert srf == [0] * 6 + [0, 1, 1, 1, 0, 0] + [0] * 6
    min2 = [value(e, "image/class/label") for e in read_examples(tmp_path / "min2")]
    assert min2 == [0, 1, 1, 1, 0, 0] * 3  # the lone PED voxel no longer counts


def test_vendor_filter_keeps_only_the_named_vendors(small_volumes, tmp_path):
    root, _ = small_volumes
    write_volume(root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001",
                 np.zeros((4, 16, 16), np.uint8), np.zeros((4, 16, 16), np.uint8))
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'cirrus'}", "--vendor=cirrus")
    manifest = json.loads((tmp_path / "cirrus" / "manifest.json").read_text())
    assert [(v["id"], v["vendor"]) for v in manifest["volumes"]] == [("TRAIN001", "cirrus")]
    assert manifest["num_examples"] == 4


def test_image_folders_become_gray_records_labelled_by_class_position(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "oct2017"
    rgb = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (18, 22), dtype=np.uint16)
    (root / "NORMAL").mkdir(parents=True)
    (root / "DME").mkdir()
    (root / "CNV").mkdir()
    Image.fromarray(rgb).save(root / "NORMAL" / "NORMAL-1-1.png")
    Image.fromarray(rgb).save(root / "DME" / "DME-2-1.bmp")
    Image.fromarray(gray16).save(root / "CNV" / "CNV-3-1.tif")
    Image.fromarray(rgb[..., 0]).save(root / "CNV" / "CNV-3-2.jpeg", quality=95)
    (root / "CNV" / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}", "--input_format=image_folders",
            "--classes=NORMAL,DME,CNV")
    examples = read_examples(out)
    got = [(value(e, "volume/id").decode(), value(e, "image/class/label")) for e in examples]
    assert got == [("NORMAL-1-1", 0), ("DME-2-1", 1), ("CNV-3-1", 2), ("CNV-3-2", 2)]
    first = tf.io.decode_png(value(examples[0], "image/encoded")).numpy()[..., 0]
    np.testing.assert_array_equal(first, np.asarray(Image.fromarray(rgb).convert("L")))
    tiff = tf.io.decode_png(value(examples[2], "image/encoded")).numpy()[..., 0]
    np.testing.assert_array_equal(tiff, np.floor(gray16 * 255.0 / 65535.0 + 0.5).astype(np.uint8))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["classes"] == ["NORMAL", "DME", "CNV"]
    assert manifest["class_counts"] == {"NORMAL": 1, "DME": 1, "CNV": 2}
    assert manifest["num_examples"] == 4
    assert [value(e, "image/source").decode() for e in examples] == [v for v, _ in got]
    assert manifest["group_regex"] is None and manifest["num_groups"] == 4


def test_group_regex_names_patients(tmp_path, capsys):
    """Kermany-style stems: the patient becomes volume/id, images numbered per patient in stem order."""
    root = tmp_path / "kermany"
    stems = {"NORMAL": ["NORMAL-17-1", "NORMAL-17-2", "NORMAL-5-1", "NORMAL-88-1"],
             "DME": ["DME-17-3", "DME-42-1", "DME-42-10", "DME-42-2"]}
    for cls, names in stems.items():
        (root / cls).mkdir(parents=True)
        for k, stem in enumerate(names):
            Image.fromarray(np.full((8, 9), 10 * k, np.uint8)).save(root / cls / f"{stem}.png")
    out = tmp_path / "out"
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}", "--input_format=image_folders", "--classes=NORMAL,DME",
            r"--group_regex=^[A-Z]+-(\d+)-\d+$")
    got = [(value(e, "image/source").decode(), value(e, "volume/id").decode(), value(e, "volume/slice"),
            value(e, "image/class/label")) for e in read_examples(out)]
    # Patient 17 has images in both classes; its slices follow the sorted stems DME-17-3, NORMAL-17-1, NORMAL-17-2.
    assert got == [("NORMAL-17-1", "17", 1, 0), ("NORMAL-17-2", "17", 2, 0), ("NORMAL-5-1", "5", 0, 0),
                   ("NORMAL-88-1", "88", 0, 0), ("DME-17-3", "17", 0, 1), ("DME-42-1", "42", 0, 1),
                   ("DME-42-10", "42", 1, 1), ("DME-42-2", "42", 2, 1)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["group_regex"] == r"^[A-Z]+-(\d+)-\d+$" and manifest["num_groups"] == 4
    assert "8 images of 4 groups" in capsys.readouterr().out
    with open(out / "index.csv", newline="") as f:
        assert [r["source"] for r in csv.DictReader(f)] == [g[0] for g in got]


@pytest.mark.parametrize("regex, message", [
    (r"^[A-Z]+-(\d+)-\d+$", "NORMAL/scan_7.png: file stem 'scan_7' does not match --group_regex"),
    (r"^[A-Z]+-\d+", "needs a capture group"),
    ("([", "not a regular expression"),
])
def test_group_regex_refusals(tmp_path, regex, message):
    root = tmp_path / "in"
    (root / "NORMAL").mkdir(parents=True)
    (root / "DME").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "NORMAL" / "scan_7.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "DME" / "DME-1-1.png")
    with pytest.raises(SystemExit) as exit_info:
        call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'out'}", "--input_format=image_folders",
                "--classes=NORMAL,DME", f"--group_regex={regex}")
    assert message in str(exit_info.value.code) and "\n" not in str(exit_info.value.code)
    assert not (tmp_path / "out").exists()


def _replace_reference(folder, reference):
    scratch = write_volume(folder.parents[2] / "scratch", reference, reference)
    for suffix in ("mhd", "raw"):
        os.replace(scratch / f"reference.{suffix}", folder / f"reference.{suffix}")


def _truncate_raw(root):
    raw = next(root.rglob("oct.raw"))
    raw.write_bytes(raw.read_bytes()[:1000])
    return raw, "truncated, expected 23040 bytes .* found 1000"


def _delete_raw(root):
    raw = next(root.rglob("oct.raw"))
    raw.unlink()
    return raw.parent / "oct.mhd", "oct.raw is missing"


def _garble_header(root):
    header = next(root.rglob("oct.mhd"))
    header.write_bytes(b"\x89garbage\xff\x00 not a header")
    return header, "unreadable MetaImage header"


def _reshape_reference(root):
    folder = next(root.rglob("oct.mhd")).parent
    _replace_reference(folder, np.zeros((6, 40, 47), np.uint8))
    return folder / "reference.mhd", r"shape \(6, 40, 47\) differs from oct.mhd shape \(6, 40, 48\)"


def _remove_reference(root):
    ref = next(root.rglob("reference.mhd"))
    ref.unlink()
    return ref, "reference is missing"


def _bad_codes(root):
    folder = next(root.rglob("oct.mhd")).parent
    reference = np.zeros((6, 40, 48), np.uint8)
    reference[0, 0, 0] = 7
    _replace_reference(folder, reference)
    return folder / "reference.mhd", "codes outside 0-3: 7"


def _two_d(root):
    import SimpleITK as sitk

    folder = next(root.rglob("oct.mhd")).parent
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((40, 48), np.uint16)), str(folder / "oct.mhd"))
    return folder / "oct.mhd", "expected a 3-D volume, got 2-D"


def _edit_header(header, key, value):
    text = header.read_text()
    assert f"\n{key} = " in text
    header.write_text(re.sub(f"\n{key} = .*", f"\n{key} = {value}", text))


def _compress_oct(root):
    """Rewrites the first volume's oct.mhd as .zraw (same voxels); returns its folder."""
    import SimpleITK as sitk

    folder = next(root.rglob("oct.mhd")).parent
    image = sitk.ReadImage(str(folder / "oct.mhd"))
    (folder / "oct.raw").unlink()
    sitk.WriteImage(image, str(folder / "oct.mhd"), useCompression=True)
    return folder


def _corrupt_zraw(root):
    zraw = _compress_oct(root) / "oct.zraw"
    data = bytearray(zraw.read_bytes())
    data[100:140] = bytes(255 - x for x in data[100:140])  # what SimpleITK answered "Uncompress failed" to
    zraw.write_bytes(bytes(data))
    return zraw, "corrupt compressed data"


def _zraw_dims_halved(root):
    folder = _compress_oct(root)
    _edit_header(folder / "oct.mhd", "DimSize", "48 40 3")
    return folder / "oct.zraw", "inflates to more than the 11520 bytes oct.mhd promises"


def _raw_element_type_edited(root):
    header = next(root.rglob("oct.mhd"))
    _edit_header(header, "ElementType", "MET_UCHAR")
    return header.with_suffix(".raw"), "longer than its header says, expected 11520 bytes .* found 23040"


def _raw_dims_halved(root):
    header = next(root.rglob("oct.mhd"))
    _edit_header(header, "DimSize", "48 40 3")
    return header.with_suffix(".raw"), "longer than its header says, expected 11520 bytes"


def _dims(value):
    def edit(root):
        header = next(root.rglob("oct.mhd"))
        _edit_header(header, "DimSize", value)
        return header, f"DimSize = {value} must be 3 integers > 0"
    return edit


def _huge_claim(root):
    folder = _compress_oct(root)
    _edit_header(folder / "oct.mhd", "DimSize", "512 496 6000")
    return folder / "oct.mhd", "header promises 3047424000 bytes .*more than --max_volume_bytes=1000000"


BAD_INPUTS = {
    "truncated_raw": _truncate_raw,
    "missing_raw": _delete_raw,
    "unreadable_header": _garble_header,
    "reference_shape": _reshape_reference,
    "missing_reference": _remove_reference,
    "codes_outside_0_3": _bad_codes,
    "not_3d": _two_d,
    "corrupt_zraw": _corrupt_zraw,
    "zraw_dims_halved": _zraw_dims_halved,
    "raw_element_type_edited": _raw_element_type_edited,
    "raw_dims_halved": _raw_dims_halved,
    "dims_zero": _dims("48 40 0"),
    "dims_negative": _dims("48 40 -6"),
    "dims_too_few": _dims("48 40"),
    "dims_too_many": _dims("48 40 6 1"),
    "huge_claim": _huge_claim,
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_volume_fails_cleanly_and_skip_bad_skips_it(small_volumes, tmp_path, case):
    root, arrays = small_volumes
    path, message = BAD_INPUTS[case](root)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        # Far above these volumes (23 KB), far below the huge claim's 3 GB.
        call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}", "--max_volume_bytes=1000000")
    text = str(exit_info.value.code)
    assert "\n" not in text and text.startswith("to_tfrecord: error: ")
    assert str(path) in text
    assert re.search(message, text), text
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]

    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}", "--skip_bad", "--max_volume_bytes=1000000")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_examples"] == 12
    assert [s["item"] for s in manifest["skipped"]] == [str(path.parent)]


def test_allow_unlabeled_skips_volume_without_reference(small_volumes, tmp_path):
    root, _ = small_volumes
    next(root.rglob("TRAIN026/reference.mhd")).unlink()
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'out'}", "--allow_unlabeled")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [v["id"] for v in manifest["volumes"]] == ["TRAIN025", "TRAIN027"]
    assert manifest["skipped"][0]["error"] == "no reference.mhd"


def test_no_volumes_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no volumes"):
        call_main(to_tfrecord, f"--input_dir={tmp_path / 'empty'}", f"--output_dir={tmp_path / 'out'}")
    assert not (tmp_path / "out").exists()


def test_output_dir_not_empty_is_left_alone(small_volumes, tmp_path):
    root, _ = small_volumes
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="output directory is not empty"):
        call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={out}")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_cli_process_exit_code_and_error_line(small_volumes, tmp_path):
    root, _ = small_volumes
    raw, _ = _truncate_raw(root)
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "to_tfrecord.py"), f"--input_dir={root}",
                           f"--output_dir={out}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    # TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL in this release; everything else counts.
    ours = [line for line in proc.stderr.splitlines()
            if not re.match(r"([IWE]\d{4} |WARNING: All log messages before absl)", line)]
    assert ours == [f"to_tfrecord: error: {raw}: truncated, expected 23040 bytes for DimSize "
                      f"48 40 6 MET_USHORT, found 1000"]
    assert proc.stdout == ""
    assert not out.exists()


def test_missing_required_flags_are_named(tmp_path):
    with pytest.raises(SystemExit, match="to_tfrecord: error: --output_dir required"):
        call_main(to_tfrecord, f"--input_dir={tmp_path}")


def _refused(tmp_path, *args):
    """The one error line of a run that must fail and leave nothing (no output, no staging folder) behind."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        call_main(to_tfrecord, f"--output_dir={out}", *args)
    text = str(exit_info.value.code)
    assert text.startswith("to_tfrecord: error: ") and "\n" not in text, text
    assert len(text.replace(str(tmp_path), "T")) < 200, text  # short but for the paths it names
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]
    return text


def test_volumes_behind_folder_links_convert_once(small_volumes, tmp_path):
    root, _ = small_volumes
    store = write_volume(tmp_path / "store" / "TRAIN001", np.zeros((3, 16, 16), np.uint8), np.zeros((3, 16, 16),
                                                                                                   np.uint8))
    (root / "RETOUCH-TrainingSet-Cirrus").mkdir()
    (root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN001").symlink_to(store, target_is_directory=True)
    (root / "also-cirrus").symlink_to(root / "RETOUCH-TrainingSet-Cirrus", target_is_directory=True)
    (root / "RETOUCH-TrainingSet-Spectralis" / "loop").symlink_to(root, target_is_directory=True)
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'out'}")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [(v["id"], v["vendor"]) for v in manifest["volumes"]] == [
        ("TRAIN001", "cirrus"), ("TRAIN025", "spectralis"), ("TRAIN026", "spectralis"), ("TRAIN027", "spectralis")]
    assert manifest["num_examples"] == 3 + 18


def test_dangling_oct_mhd_link_is_refused(small_volumes, tmp_path):
    root, _ = small_volumes
    link = root / "RETOUCH-TrainingSet-Cirrus" / "TRAIN002" / "oct.mhd"
    link.parent.mkdir(parents=True)
    link.symlink_to(tmp_path / "unmounted" / "oct.mhd")
    text = _refused(tmp_path, f"--input_dir={root}")
    assert f"{link}: broken link to {tmp_path / 'unmounted' / 'oct.mhd'}" in text


def test_duplicate_volume_ids_are_refused(small_volumes, tmp_path):
    root, _ = small_volumes
    first = root / "RETOUCH-TrainingSet-Spectralis" / "TRAIN025"
    second = write_volume(root / "RETOUCH-TestSet-Cirrus" / "TRAIN025", np.zeros((3, 16, 16), np.uint8),
                          np.zeros((3, 16, 16), np.uint8))
    text = _refused(tmp_path, f"--input_dir={root}")
    assert str(first) in text and str(second) in text and "volume/id must be unique" in text
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'cirrus'}", "--vendor=cirrus")  # one each: fine
    assert json.loads((tmp_path / "cirrus" / "manifest.json").read_text())["num_volumes"] == 1


def _empty_folder(folder):
    folder.mkdir()


def _no_images(folder):
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("make, classes, message", [
    (_empty_folder, "NORMAL,DME", "{root}/DME: class folder holds no images"),
    (_no_images, "NORMAL,DME", "{root}/DME: class folder holds no images"),
    (_no_images, "NORMAL", "--classes=NORMAL: needs at least two classes"),
    (_no_images, "NORMAL,DME,NORMAL", "--classes: names NORMAL more than once"),
])
def test_class_without_images_is_refused(tmp_path, make, classes, message):
    root = tmp_path / "in"
    (root / "NORMAL").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "NORMAL" / "NORMAL-1-1.png")
    make(root / "DME")
    text = _refused(tmp_path, f"--input_dir={root}", "--input_format=image_folders", f"--classes={classes}")
    assert message.format(root=root) in text


def test_stale_staging_of_killed_runs_is_removed(small_volumes, tmp_path, capsys):
    root, _ = small_volumes
    dead = tmp_path / ".out.partial-99999999-x1y2"  # above any pid_max: its process is gone
    old_style = tmp_path / ".out.partial-a8d3k"  # from before staging names carried the pid
    alive = tmp_path / f".out.partial-{os.getpid()}-busy"  # another conversion still running
    other = tmp_path / ".other.partial-99999999-x1y2"  # another output's: not ours to touch
    for folder in (dead, old_style, alive, other):
        folder.mkdir()
        (folder / "shard-0.tmp").write_bytes(b"half a shard")
    call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={tmp_path / 'out'}")
    assert not dead.exists() and not old_style.exists() and alive.exists() and other.exists()
    assert (tmp_path / "out" / "manifest.json").is_file()
    lines = [line for line in capsys.readouterr().err.splitlines() if "staging" in line]
    assert lines == [f"{tmp_path}: removed 2 staging folder(s) of killed runs ({dead.name}, {old_style.name})"]


@pytest.mark.parametrize("where, message", [
    ("file/out", "--output_dir={tmp}/file/out: cannot be created: {tmp}/file is a file"),
    ("file", "--output_dir={tmp}/file: is a file; expected a folder"),
    ("/proc/octtl-out", "--output_dir=/proc/octtl-out: cannot be created"),  # a place no one can write
])
def test_output_dir_that_cannot_be_created(small_volumes, tmp_path, where, message):
    root, _ = small_volumes
    (tmp_path / "file").write_text("a regular file")
    output_dir = tmp_path / where
    with pytest.raises(SystemExit) as exit_info:
        call_main(to_tfrecord, f"--input_dir={root}", f"--output_dir={output_dir}")
    text = str(exit_info.value.code)
    assert text.startswith("to_tfrecord: error: " + message.format(tmp=tmp_path)) and "\n" not in text, text
    assert (tmp_path / "file").read_text() == "a regular file"
    assert not [p for p in (tmp_path, pathlib.Path("/proc")) for p in p.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("owner, name, error", [
    (csv, "writer", OSError(28, "No space left on device")),
    (tfrecord, "Writer", OSError(28, "No space left on device")),
])
def test_write_failure_is_one_line_and_leaves_nothing(small_volumes, tmp_path, monkeypatch, owner, name, error):
    """A disk that fills up while the index or a shard is written: one line naming --output_dir, no staging left."""
    root, _ = small_volumes

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(owner, name, fail)
    text = _refused(tmp_path, f"--input_dir={root}")
    assert text == f"to_tfrecord: error: --output_dir={tmp_path / 'out'}: cannot write (No space left on device)"
