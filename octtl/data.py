"""tf.data input pipelines over converted B-scan records.

Host-side work stays on 1-channel uint8 crops: they are what the cache holds (a
224x224 crop is 50 KB, so the paper's 1176 B-scans cache in ~60 MB), and gray to
3 channels happens inside the model where it costs nothing on an accelerator.
"""

import csv
import dataclasses
import pathlib
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from octtl import records
from octtl.volumes import InputError

CROPS = ("center", "resize")
RESCALES = ("paper", "none")


@dataclasses.dataclass(frozen=True)
class Metadata:
    """Per-example facts of a converted dataset, in record order (example i = row i)."""

    labels: np.ndarray
    volume_ids: np.ndarray
    slices: np.ndarray
    vendors: np.ndarray
    irf: np.ndarray
    srf: np.ndarray
    ped: np.ndarray
    sources: np.ndarray  # image/source: the image file stem, or "<volume id>:<slice>"

    def __len__(self):
        return len(self.labels)


def read_metadata(records_dir) -> Metadata:
    """Labels, volume ids and fluid counts of every example, from index.csv without decoding images.

    Falls back to reading the records' small features when index.csv is absent (records
    written by other tools).
    """
    records_dir = pathlib.Path(records_dir)
    if not records_dir.is_dir():
        raise InputError(f"{records_dir}: records directory does not exist")
    if not records.shard_paths(records_dir):
        raise InputError(f"{records_dir}: no {records.SHARD_PATTERN} files; convert data with tools/to_tfrecord.py")
    path = records_dir / records.INDEX
    if not path.is_file():
        return scan_metadata(records_dir)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # Datasets converted before image/source existed lack its column.
    if not rows or list(rows[0]) not in (list(records.INDEX_COLUMNS), list(records.INDEX_COLUMNS[:-1])):
        raise InputError(f"{path}: expected columns {','.join(records.INDEX_COLUMNS)}")
    if [int(r["index"]) for r in rows] != list(range(len(rows))):
        raise InputError(f"{path}: index column is not 0..{len(rows) - 1} in order")
    column = lambda name, dtype: np.array([r[name] for r in rows], dtype=dtype)  # noqa: E731
    volume_ids, slices = column("volume_id", object), column("slice", np.int64)
    sources = column("source", object) if "source" in rows[0] else np.array([""] * len(rows), dtype=object)
    return Metadata(labels=column("label", np.int64), volume_ids=volume_ids, slices=slices,
                    vendors=column("vendor", object), irf=column("irf", np.int64), srf=column("srf", np.int64),
                    ped=column("ped", np.int64), sources=_named_sources(sources, volume_ids, slices))


def _named_sources(sources, volume_ids, slices) -> np.ndarray:
    """image/source, with "<volume id>:<slice>" where a dataset converted before it existed has none."""
    return np.array([s or f"{v}:{int(k)}" for s, v, k in zip(sources, volume_ids, slices)], dtype=object)


def scan_metadata(records_dir) -> Metadata:
    """Per-example metadata read from the records themselves (the image bytes are not decoded)."""
    ds = tf.data.TFRecordDataset(records.shard_paths(records_dir)).batch(1024)
    ds = ds.map(lambda s: records.parse(s, records.METADATA_FEATURES))
    columns = {k: [] for k in records.METADATA_FEATURES}
    for batch in ds.as_numpy_iterator():
        for key, values in batch.items():
            columns[key].append(values)
    get = lambda key: np.concatenate(columns[key]) if columns[key] else np.array([])  # noqa: E731
    decode = lambda key: np.array([v.decode() for v in get(key)], dtype=object)  # noqa: E731
    volume_ids, slices = decode(records.VOLUME_ID), get(records.SLICE).astype(np.int64)
    return Metadata(labels=get(records.LABEL).astype(np.int64), volume_ids=volume_ids, slices=slices,
                    vendors=decode(records.VENDOR), irf=get(records.IRF).astype(np.int64),
                    srf=get(records.SRF).astype(np.int64), ped=get(records.PED).astype(np.int64),
                    sources=_named_sources(decode(records.SOURCE), volume_ids, slices))


def crop(image, image_size: int, mode: str = "center"):
    """A (size, size, 1) uint8 view of one B-scan: centre crop (zero-padded if smaller) or resize."""
    if mode == "center":
        # The paper's choice: keep native pixel scale, lose the lateral periphery.
        return tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    if mode == "resize":
        # Keeps the whole B-scan at the price of anisotropic scaling.
        resized = tf.image.resize(image, (image_size, image_size), antialias=True)
        return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
    raise ValueError(f"crop mode must be one of {CROPS}, got {mode!r}")


def rescale(images, mode: str = "paper"):
    """'paper': uint8 to float32 in [-1, 1] as in the paper; 'none': uint8 for the model to scale."""
    if mode == "paper":
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    if mode == "none":
        return images
    raise ValueError(f"rescale mode must be one of {RESCALES}, got {mode!r}")


def dataset(records_dir, indices: Sequence[int], image_size: int, batch_size: int, *,
            training: bool, seed: int = 0, crop_mode: str = "center", rescale_mode: str = "none",
            cache: bool = True, num_examples: Optional[int] = None,
            drop_remainder: bool = False) -> tf.data.Dataset:
    """(images, labels) batches of the examples at `indices` of a converted dataset.

    Training datasets are reshuffled every epoch (deterministically for `seed`) and
    repeat only when the caller asks; evaluation datasets keep the order of
    sorted(indices), so predictions line up with `read_metadata` rows.

    Args:
      records_dir: output of tools/to_tfrecord.py.
      indices: example indices (rows of index.csv) to include.
      image_size: side of the square crop fed to the network.
      training: shuffle each epoch when True.
      crop_mode: 'center' (the paper) or 'resize'.
      rescale_mode: 'none' (uint8: octtl models scale their inputs themselves) or 'paper' ([-1, 1] float32,
        what models saved before that expect in paper mode).
      cache: keep decoded crops in memory after the first pass.
      num_examples: total examples in the dataset, if the caller already knows it.
      drop_remainder: drop the last partial batch (MATLAB's training default, which the paper used).
    """
    if crop_mode not in CROPS:
        raise ValueError(f"crop mode must be one of {CROPS}, got {crop_mode!r}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    files = records.shard_paths(records_dir)
    if not files:
        raise InputError(f"{records_dir}: no {records.SHARD_PATTERN} files")
    total = num_examples if num_examples is not None else len(read_metadata(records_dir))
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ValueError("no examples selected")
    if indices[0] < 0 or indices[-1] >= total:
        raise ValueError(f"example indices must be in 0..{total - 1}")
    selected = np.zeros(total, bool)
    selected[indices] = True
    selected = tf.constant(selected)

    def decode(serialized):
        example = records.parse(serialized, {records.IMAGE: records.FEATURES[records.IMAGE],
                                             records.LABEL: records.FEATURES[records.LABEL]})
        image = crop(records.decode_image(example[records.IMAGE]), image_size, crop_mode)
        return image, tf.cast(example[records.LABEL], tf.int32)

    ds = tf.data.TFRecordDataset(files)
    # Shards are contiguous runs in index order, so enumerate() recovers each example's index.
    ds = ds.enumerate().filter(lambda i, _: selected[i]).map(lambda _, s: s)
    # filter() hides the size; stating it gives Keras' progress bars and predict() their step counts.
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(indices)))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.map(lambda x, y: (rescale(x, rescale_mode), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
