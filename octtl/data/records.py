"""The TFRecord schema of octtl (one tf.train.Example per B-scan), its index.csv and its manifest.json.

Encode and parse, the index's writer and reader live here together so the writer (octtl.data.converter) and
the readers cannot disagree. A converted dataset, in its folder:
  * `bscans-00000-of-0000N.tfrecord`: contiguous runs of examples in index order
    (volumes sorted by path, B-scans in order), so example i of `index.csv` is the i-th
    record read through the shards in name order.
  * `index.csv`: one row per example (index, shard, volume_id, slice, label, vendor,
    irf, srf, ped), the cheap way to plan folds without decoding an image.
  * `manifest.json`: counts, classes, volumes, shards and the settings used.
"""

import csv
import dataclasses
import hashlib
import json
import pathlib

import numpy as np
import tensorflow as tf

from octtl.errors import InputError

IMAGE = "image/encoded"
HEIGHT = "image/height"
WIDTH = "image/width"
LABEL = "image/class/label"
VOLUME_ID = "volume/id"
SLICE = "volume/slice"
VENDOR = "volume/vendor"
IRF, SRF, PED = "fluid/irf", "fluid/srf", "fluid/ped"
SOURCE = "image/source"

FEATURES = {
    IMAGE: tf.io.FixedLenFeature([], tf.string),
    HEIGHT: tf.io.FixedLenFeature([], tf.int64),
    WIDTH: tf.io.FixedLenFeature([], tf.int64),
    LABEL: tf.io.FixedLenFeature([], tf.int64),
    VOLUME_ID: tf.io.FixedLenFeature([], tf.string),
    SLICE: tf.io.FixedLenFeature([], tf.int64),
    VENDOR: tf.io.FixedLenFeature([], tf.string),
    IRF: tf.io.FixedLenFeature([], tf.int64),
    SRF: tf.io.FixedLenFeature([], tf.int64),
    PED: tf.io.FixedLenFeature([], tf.int64),
    # Records written before image/source existed parse with an empty one.
    SOURCE: tf.io.FixedLenFeature([], tf.string, default_value=""),
}
# The small features, for reading metadata without touching the image bytes.
METADATA_FEATURES = {k: v for k, v in FEATURES.items() if k != IMAGE}

CLASSES = ("normal", "fluid")
MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("index", "shard", "volume_id", "slice", "label", "vendor", "irf", "srf", "ped", "source")
SHARD_PATTERN = "bscans-*-of-*.tfrecord"


def shard_name(shard: int, num_shards: int) -> str:
    """The file name of shard `shard` of `num_shards` (0-based), which SHARD_PATTERN matches."""
    return f"bscans-{shard:05d}-of-{num_shards:05d}.tfrecord"


def _int64(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _bytes(value: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def encode(png: bytes, height: int, width: int, label: int, volume_id: str, slice_index: int,
           vendor: str, irf: int, srf: int, ped: int, source: str) -> bytes:
    """One B-scan as a serialized tf.train.Example with exactly the keys of FEATURES."""
    feature = {
        IMAGE: _bytes(png), HEIGHT: _int64(height), WIDTH: _int64(width), LABEL: _int64(label),
        VOLUME_ID: _bytes(volume_id.encode()), SLICE: _int64(slice_index),
        VENDOR: _bytes(vendor.lower().encode()), IRF: _int64(irf), SRF: _int64(srf), PED: _int64(ped),
        SOURCE: _bytes(source.encode()),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def parse(serialized, features=None):
    """Parses serialized Examples (scalar or batch) into a dict of tensors keyed as FEATURES."""
    if serialized.shape.rank == 0:
        return tf.io.parse_single_example(serialized, features or FEATURES)
    return tf.io.parse_example(serialized, features or FEATURES)


def decode_image(png):
    """PNG bytes to a (height, width, 1) uint8 tensor."""
    return tf.io.decode_png(png, channels=1, dtype=tf.uint8)


def shard_paths(records_dir) -> list:
    """The shard files of a converted dataset in index order."""
    return sorted(str(p) for p in pathlib.Path(records_dir).glob(SHARD_PATTERN))


def write_index(path, rows):
    """index.csv: one row per example, INDEX_COLUMNS in order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def manifest_counts(rows, volume_rows, shard_files, skipped, class_names) -> dict:
    """The manifest's counts of examples, classes, volumes and shards, and what was skipped."""
    labels = np.array([r["label"] for r in rows])
    counts = {name: int(np.count_nonzero(labels == k)) for k, name in enumerate(class_names)}
    return {
        "num_examples": len(rows),
        # Label 0 is the negative class ("normal"); every other label counts as fluid.
        "num_normal": int(np.count_nonzero(labels == 0)),
        "num_fluid": int(np.count_nonzero(labels != 0)),
        "classes": class_names,
        "class_counts": counts,
        "volumes": volume_rows,
        "num_volumes": len(volume_rows) if volume_rows else len({r["volume_id"] for r in rows}),
        "shards": shard_files,
        "skipped": skipped,
        "rule_8bit": "uint8 as is; uint16 v/257 (full 16-bit range); float in [0,1] x255; else min-max",
    }


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
    if not shard_paths(records_dir):
        raise InputError(f"{records_dir}: no {SHARD_PATTERN} files; convert data with tools/to_tfrecord.py")
    path = records_dir / INDEX
    if not path.is_file():
        return scan_metadata(records_dir)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # Datasets converted before image/source existed lack its column.
    if not rows or list(rows[0]) not in (list(INDEX_COLUMNS), list(INDEX_COLUMNS[:-1])):
        raise InputError(f"{path}: expected columns {','.join(INDEX_COLUMNS)}")
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
    ds = tf.data.TFRecordDataset(shard_paths(records_dir)).batch(1024)
    ds = ds.map(lambda s: parse(s, METADATA_FEATURES))
    columns = {k: [] for k in METADATA_FEATURES}
    for batch in ds.as_numpy_iterator():
        for key, values in batch.items():
            columns[key].append(values)
    get = lambda key: np.concatenate(columns[key]) if columns[key] else np.array([])  # noqa: E731
    decode = lambda key: np.array([v.decode() for v in get(key)], dtype=object)  # noqa: E731
    volume_ids, slices = decode(VOLUME_ID), get(SLICE).astype(np.int64)
    return Metadata(labels=get(LABEL).astype(np.int64), volume_ids=volume_ids, slices=slices,
                    vendors=decode(VENDOR), irf=get(IRF).astype(np.int64),
                    srf=get(SRF).astype(np.int64), ped=get(PED).astype(np.int64),
                    sources=_named_sources(decode(SOURCE), volume_ids, slices))


def identity(records_dir) -> dict:
    """What names a converted dataset in results: the sha256 of its manifest.json and its number of examples."""
    path = pathlib.Path(records_dir) / MANIFEST
    try:
        text = path.read_bytes()
        count = int(json.loads(text)["num_examples"])
    except FileNotFoundError:
        raise InputError(f"{path}: missing; is {records_dir} a folder written by tools/to_tfrecord.py?") from None
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a manifest ({e})") from None
    return {"manifest_sha256": hashlib.sha256(text).hexdigest(), "num_examples": count}


def read_manifest(records_dir) -> dict:
    """The manifest of a converted dataset, with a clear error when it is not one."""
    path = pathlib.Path(records_dir) / MANIFEST
    if not path.is_file():
        raise InputError(f"{path}: missing; is {records_dir} a directory written by to_tfrecord?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
