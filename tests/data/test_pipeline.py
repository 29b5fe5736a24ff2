"""Tests of octtl/data/pipeline.py: metadata, crops, rescaling, ordering and per-epoch shuffling."""

import pathlib

import numpy as np
import pytest

from conftest import fake_run, run_main
from octtl.data import pipeline

from octtl.data import converter, records
from octtl.training.config import Config


@pytest.fixture
def converted(small_volumes, tmp_path):
    root, arrays = small_volumes
    out = tmp_path / "records"
    converter.convert(root, out, num_shards=3, progress=None)
    bscans = np.concatenate([arrays[v][0] for v in sorted(arrays)])
    references = np.concatenate([arrays[v][1] for v in sorted(arrays)])
    eight_bit = np.floor(bscans * 255.0 / 65535.0 + 0.5).astype(np.uint8)
    return out, eight_bit, references


def center(image, size):
    """Centre crop/zero-pad of a 2-D array, written independently of TensorFlow."""
    out = np.zeros((size, size), image.dtype)
    h, w = image.shape
    src_r, src_c = max((h - size) // 2, 0), max((w - size) // 2, 0)
    dst_r, dst_c = max((size - h) // 2, 0), max((size - w) // 2, 0)
    n_r, n_c = min(h, size), min(w, size)
    out[dst_r:dst_r + n_r, dst_c:dst_c + n_c] = image[src_r:src_r + n_r, src_c:src_c + n_c]
    return out


def test_metadata_from_index_equals_records(converted):
    out, _, references = converted
    meta = records.read_metadata(out)
    scanned = records.scan_metadata(out)
    assert len(meta) == 18
    for field in ("labels", "volume_ids", "slices", "vendors", "irf", "srf", "ped", "sources"):
        np.testing.assert_array_equal(getattr(meta, field), getattr(scanned, field))
    assert meta.labels.tolist() == [int(r.any()) for r in references]
    assert meta.volume_ids.tolist() == [f"TRAIN{25 + i // 6:03d}" for i in range(18)]
    assert meta.slices.tolist() == list(range(6)) * 3


def decoded(out, size, crop_mode="center"):
    return pipeline.decode(out, records.read_metadata(out), size, crop_mode)


@pytest.mark.parametrize("size", [32, 64])  # 64 > 40 rows: crop columns, pad rows
def test_decode_order_and_pixels(converted, size):
    out, eight_bit, references = converted
    result = decoded(out, size)
    # uint8 crops, row i = index.csv row i: the models scale their inputs themselves.
    assert result.images.shape == (18, size, size, 1) and result.images.dtype == np.uint8
    assert result.labels.tolist() == [int(r.any()) for r in references]
    for i, image in enumerate(result.images):
        np.testing.assert_array_equal(image[..., 0], center(eight_bit[i], size))


def test_resize_and_paper_rescale(converted):
    out, eight_bit, _ = converted
    resized = decoded(out, 24, "resize").images
    # A resize keeps the whole B-scan: its mean brightness stays that of the full image.
    assert abs(resized[0].mean() - eight_bit[0].mean()) < 2.0
    paper = pipeline.rescale(decoded(out, 24).images[:1], "paper").numpy()
    np.testing.assert_allclose(paper[0, ..., 0], center(eight_bit[0], 24) / 127.5 - 1.0, atol=1e-6)


def test_training_reshuffles_every_epoch_deterministically(converted):
    out, _, _ = converted
    images = decoded(out, 16)
    indices = list(range(18))

    def epochs(seed, count=3):
        ds = pipeline.training_batches(images, indices, 18, seed)
        return [next(iter(ds))[0].numpy()[:, 8, 8, 0] for _ in range(count)]

    first = epochs(seed=1)
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    for a, b in zip(first, epochs(seed=1)):
        np.testing.assert_array_equal(a, b)  # ... identically for the same seed
    for epoch in first[1:]:
        np.testing.assert_array_equal(np.sort(epoch), np.sort(first[0]))  # ... same examples


def test_training_covers_subset_each_epoch_and_drops_the_partial_batch(converted):
    out, _, references = converted
    subset = [1, 2, 5, 7, 11, 12, 17]
    ds = pipeline.training_batches(decoded(out, 16), subset, 3, seed=0)
    for _ in range(2):
        labels = np.concatenate([y.numpy() for _, y in ds])
        assert len(labels) == 6  # two full batches of 3; the seventh example waits for another epoch
        assert set(labels.tolist()) <= {int(references[i].any()) for i in subset}


def test_padded_batches_keep_one_shape():
    images = np.arange(5 * 2 * 2, dtype=np.uint8).reshape(5, 2, 2, 1)
    batches = list(pipeline.padded_batches(images, 2))
    assert [b.shape for b, _ in batches] == [(2, 2, 2, 1)] * 3 and [n for _, n in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[:n] for b, n in batches]), images)


def test_unknown_crop_or_rescale_mode_is_refused(converted, tmp_path):
    out, _, _ = converted
    with pytest.raises(ValueError, match="crop mode"):
        decoded(out, 16, "zoom")
    with pytest.raises(pipeline.InputError, match="does not exist"):
        records.read_metadata(tmp_path / "nowhere")


def _flip_bytes(out):
    shard = sorted(out.glob("bscans-*.tfrecord"))[1]
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    shard.write_bytes(bytes(raw))
    return shard, "damaged or truncated TFRecord shard"


def _truncate(out):
    shard = sorted(out.glob("bscans-*.tfrecord"))[2]
    shard.write_bytes(shard.read_bytes()[:-100])
    return shard, "damaged or truncated TFRecord shard"


def _remove(out):
    shard = sorted(out.glob("bscans-*.tfrecord"))[0]
    shard.unlink()
    return shard, "shard listed in manifest.json is missing"


def _relabel(out):
    index = out / "index.csv"
    lines = index.read_text().splitlines()
    fields = lines[4].split(",")  # row 3
    fields[4] = str(1 - int(fields[4]))
    lines[4] = ",".join(fields)
    index.write_text("\n".join(lines) + "\n")
    return index, "row 3 says TRAIN025 slice 3 label"


def _drop_row(out):
    index = out / "index.csv"
    lines = index.read_text().splitlines()
    index.write_text("\n".join(lines[:-1]) + "\n")
    return index, "17 rows, but manifest.json says 18 examples"


@pytest.mark.parametrize("damage", [_flip_bytes, _truncate, _remove, _relabel, _drop_row])
def test_damaged_records_are_named_with_the_remedy(converted, damage, tmp_path):
    from octtl.training import session

    out, _, _ = converted
    culprit, message = damage(out)
    with pytest.raises(pipeline.InputError) as error:
        session.train(Config(data_dir=str(out), logdir=str(tmp_path / "runs"), arch="tiny", batch=4,
                                       folds=3, image_size=16, weights="none"), 0, say=lambda line: None,
                       progress=False)
    text = str(error.value)
    assert text.startswith(str(culprit)) and message in text and "convert the data again" in text
    assert "\n" not in text and len(text) < 400
    assert not (tmp_path / "runs").exists()  # nothing of the run was created


def test_a_shard_the_manifest_does_not_list_is_named_and_read_neither_by_training_nor_by_predict(converted, tmp_path):
    """A copy named like a shard (left there, or another conversion's): both read exactly what the manifest lists."""
    from octtl import outputs, predict
    from octtl.training import session

    out, eight_bit, _ = converted
    extra = out / records.shard_name(3, 4)
    extra.write_bytes(pathlib.Path(records.shard_paths(out)[0]).read_bytes())
    lines = []
    config = Config(data_dir=str(out), logdir=str(tmp_path / "runs"), arch="tiny", batch=4, folds=3, image_size=16,
                    weights="none")
    decoded = session.decode(config, records.read_metadata(out), 0, lines.append)
    assert len(decoded.images) == len(eight_bit)
    note = f"{out}: {extra.name} not listed in manifest.json, not read"
    assert any(line.startswith(f"train: note: {note}") for line in lines), lines

    model = fake_run(tmp_path / "run", arch="tiny", image_size=32)
    code, printed, err = run_main(predict, f"--model={model}", f"--input={out}", f"--output={tmp_path / 'p.csv'}")
    assert code == 0, err
    assert printed.startswith(f"{len(eight_bit)} B-scans of 3 volumes (records)") and f"note: {note}" in printed
    assert len(outputs.read_csv(tmp_path / "p.csv")[1]) == len(eight_bit)
