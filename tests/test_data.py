"""Tests of octtl/data.py: metadata, crops, rescaling, ordering and per-epoch shuffling."""

import numpy as np
import pytest

from octtl import data, records


@pytest.fixture
def converted(small_volumes, tmp_path):
    root, arrays = small_volumes
    out = tmp_path / "records"
    records.convert(root, out, num_shards=3, progress=None)
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
    meta = data.read_metadata(out)
    scanned = data.scan_metadata(out)
    assert len(meta) == 18
    for field in ("labels", "volume_ids", "slices", "vendors", "irf", "srf", "ped", "sources"):
        np.testing.assert_array_equal(getattr(meta, field), getattr(scanned, field))
    assert meta.labels.tolist() == [int(r.any()) for r in references]
    assert meta.volume_ids.tolist() == [f"TRAIN{25 + i // 6:03d}" for i in range(18)]
    assert meta.slices.tolist() == list(range(6)) * 3


@pytest.mark.parametrize("size", [32, 64])  # 64 > 40 rows: crop columns, pad rows
def test_eval_dataset_order_and_pixels(converted, size):
    out, eight_bit, references = converted
    indices = [16, 3, 0, 9, 4]
    images, labels = [], []
    for x, y in data.dataset(out, indices, size, batch_size=2, training=False):
        images.append(x.numpy())
        labels.append(y.numpy())
    images, labels = np.concatenate(images), np.concatenate(labels)
    order = sorted(indices)
    # uint8 crops: the models scale their inputs themselves.
    assert images.shape == (5, size, size, 1) and images.dtype == np.uint8
    assert labels.tolist() == [int(references[i].any()) for i in order]
    for image, i in zip(images, order):
        np.testing.assert_array_equal(image[..., 0], center(eight_bit[i], size))


def test_paper_rescale_and_resize_modes(converted):
    out, eight_bit, _ = converted
    x, _ = next(iter(data.dataset(out, [0], 24, 1, training=False, rescale_mode="paper")))
    assert x.dtype.name == "float32"
    np.testing.assert_allclose(x.numpy()[0, ..., 0], center(eight_bit[0], 24) / 127.5 - 1.0, atol=1e-6)
    x, _ = next(iter(data.dataset(out, [0], 24, 1, training=False, crop_mode="resize")))
    assert x.shape == (1, 24, 24, 1)
    # A resize keeps the whole B-scan: its mean brightness stays that of the full image.
    assert abs(x.numpy().mean() - eight_bit[0].mean()) < 2.0


def test_training_reshuffles_every_epoch_deterministically(converted):
    out, _, _ = converted
    indices = list(range(18))

    def epochs(seed, count=3):
        ds = data.dataset(out, indices, 16, 18, training=True, seed=seed)
        return [next(iter(ds))[0].numpy()[:, 8, 8, 0] for _ in range(count)]

    first = epochs(seed=1)
    assert not np.array_equal(first[0], first[1])  # reshuffled each epoch
    for a, b in zip(first, epochs(seed=1)):
        np.testing.assert_array_equal(a, b)  # ... identically for the same seed
    for epoch in first[1:]:
        np.testing.assert_array_equal(np.sort(epoch), np.sort(first[0]))  # ... same examples


def test_training_covers_subset_each_epoch(converted):
    out, _, references = converted
    subset = [1, 2, 5, 7, 11, 12, 17]
    ds = data.dataset(out, subset, 16, 3, training=True, seed=0)
    for _ in range(2):
        labels = np.concatenate([y.numpy() for _, y in ds])
        assert sorted(labels.tolist()) == sorted(int(references[i].any()) for i in subset)


def test_bad_arguments(converted, tmp_path):
    out, _, _ = converted
    with pytest.raises(ValueError, match="indices must be in 0..17"):
        data.dataset(out, [18], 16, 1, training=False)
    with pytest.raises(ValueError, match="crop mode"):
        data.dataset(out, [0], 16, 1, training=False, crop_mode="zoom")
    with pytest.raises(data.InputError, match="does not exist"):
        data.read_metadata(tmp_path / "nowhere")
