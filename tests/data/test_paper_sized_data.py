"""Acceptance of the data stage: the paper-sized synthetic dataset through both tools, checked with numpy."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from conftest import run_main
from octtl import make_synthetic, to_tfrecord
from octtl.data import pipeline
from octtl.data import records


@pytest.fixture(scope="module")
def paper_sized(tmp_path_factory):
    """24 default Spectralis volumes (49 x 496 x 512 uint16) made and converted by the command-line tools."""
    root = tmp_path_factory.mktemp("paper")
    # The commands' own main, in this process (no second TensorFlow start-up): what the tools run.
    for command, args in ((make_synthetic, [f"--output_dir={root / 'synthetic'}"]),
                          (to_tfrecord, [f"--input_dir={root / 'synthetic'}", f"--output_dir={root / 'records'}"])):
        code, _, err = run_main(command, *args)
        assert code == 0, err[-2000:]
    return root


def test_1176_examples_match_reference_masks_exactly(paper_sized):
    volume_root = paper_sized / "synthetic" / "RETOUCH-TrainingSet-Spectralis"
    expected = []  # (id, slice, label, irf, srf, ped, 8-bit B-scan) recomputed from the .mhd files
    for k in range(24):
        vid = f"TRAIN{25 + k:03d}"
        oct_array = sitk.GetArrayFromImage(sitk.ReadImage(str(volume_root / vid / "oct.mhd")))
        reference = sitk.GetArrayFromImage(sitk.ReadImage(str(volume_root / vid / "reference.mhd")))
        assert oct_array.shape == reference.shape == (49, 496, 512) and oct_array.dtype == np.uint16
        for s in range(49):
            ref = reference[s]
            expected.append((vid, s, int((ref > 0).sum() >= 1), int((ref == 1).sum()), int((ref == 2).sum()),
                             int((ref == 3).sum()), oct_array[s]))
    got = list(records.examples(records.shard_paths(paper_sized / "records")))
    assert len(got) == len(expected) == 1176
    for example, (vid, s, label, irf, srf, ped, bscan) in zip(got, expected):
        assert example[records.VOLUME_ID] == vid
        assert int(example[records.SLICE]) == s
        assert int(example[records.LABEL]) == label
        assert (int(example[records.IRF]), int(example[records.SRF]), int(example[records.PED])) == (irf, srf, ped)
        assert example[records.VENDOR] == "spectralis"
        assert (int(example[records.HEIGHT]), int(example[records.WIDTH])) == (496, 512)
        if s % 12 == 0:  # pixels of a sample of B-scans: decoding all 1176 adds nothing but time
            pixels = tf.io.decode_png(example[records.IMAGE], channels=1).numpy()[..., 0]
            np.testing.assert_array_equal(pixels, np.floor(bscan / 257.0 + 0.5).astype(np.uint8))

    labels = np.array([e[2] for e in expected])
    manifest = json.loads((paper_sized / "records" / "manifest.json").read_text())
    assert manifest["num_examples"] == 1176
    assert manifest["num_fluid"] == labels.sum() and manifest["num_normal"] == 1176 - labels.sum()
    assert 0.5 <= labels.mean() <= 0.7  # about 60% fluid, as in the paper's dataset
    assert sum(s["num_examples"] for s in manifest["shards"]) == 1176
    assert [v["id"] for v in manifest["volumes"]] == [f"TRAIN{25 + k:03d}" for k in range(24)]
    for volume in manifest["volumes"]:
        rows = [e for e in expected if e[0] == volume["id"]]
        assert volume["num_fluid"] == sum(r[2] for r in rows)
        assert volume["irf_voxels"] == sum(r[3] for r in rows)
    meta = records.read_metadata(paper_sized / "records")
    np.testing.assert_array_equal(meta.labels, labels)


def test_the_paper_dataset_decodes_into_memory_at_the_largest_native_input(paper_sized):
    meta = records.read_metadata(paper_sized / "records")
    decoded = pipeline.decode(paper_sized / "records", meta, 299, "center")
    # What a training session keeps: uint8 crops, the models scale them; 1176 x 299 x 299 bytes = 105 MB.
    assert decoded.images.shape == (1176, 299, 299, 1) and decoded.images.dtype == np.uint8
    assert decoded.images.nbytes == 105_135_576
    np.testing.assert_array_equal(decoded.labels, meta.labels)
    for size in (224, 227):
        smaller = pipeline.crop(tf.constant(decoded.images[:2]), size, "center").numpy()
        offset = (299 - size) // 2  # a smaller centre crop of a decoded crop is its middle
        np.testing.assert_array_equal(smaller, decoded.images[:2, offset:offset + size, offset:offset + size])
