"""The TFRecord schema of octtl (one tf.train.Example per B-scan) and the converter that writes it.

Encode and parse live here together so the writer and the reader cannot disagree.
Output of `convert`, in `output_dir`:
  * `bscans-00000-of-0000N.tfrecord`: contiguous runs of examples in index order
    (volumes sorted by path, B-scans in order), so example i of `index.csv` is the i-th
    record read through the shards in name order.
  * `index.csv`: one row per example (index, shard, volume_id, slice, label, vendor,
    irf, srf, ped), the cheap way to plan folds without decoding an image.
  * `manifest.json`: counts, classes, volumes, shards and the settings used.
"""

import concurrent.futures
import csv
import dataclasses
import datetime
import functools
import hashlib
import json
import os
import pathlib
import shutil
import sys
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from octtl.data import metaimage
from octtl import outputs
from octtl.data import volumes as volumes_lib
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


def _load(item, **how):
    """One source item (a volume folder or an image) read into B-scans, and their PNG bytes."""
    bscans = volumes_lib.read_item(item, **how)
    return bscans, [] if bscans is None else [volumes_lib.encode_png(image) for image in bscans.images]


def convert(input_dir, output_dir, *, input_format: str = "retouch", vendor="all",
            fluid_codes: Sequence[int] = volumes_lib.ALL_FLUID, min_fluid_voxels: int = 1,
            classes: Optional[Sequence[str]] = None, num_shards: int = 0, workers: int = 4,
            allow_unlabeled: bool = False, skip_bad: bool = False, group_regex: Optional[str] = None,
            max_volume_bytes: int = metaimage.MAX_VOLUME_BYTES, settings: Optional[dict] = None,
            progress: Optional[Callable] = None) -> dict:
    """Converts RETOUCH volumes or class image folders under `input_dir` to sharded TFRecords.

    Nothing appears at `output_dir` until every shard, the index and the manifest are
    written: the work happens in a temporary sibling directory that is renamed at the end.
    Staging folders that killed runs left beside `output_dir` are removed first.

    Args:
      input_format: 'retouch' (folders holding oct.mhd + reference.mhd) or 'image_folders'.
      vendor: 'all', or one or several of volumes.VENDORS; other volumes are left out.
      fluid_codes: reference codes that count as fluid.
      min_fluid_voxels: a B-scan is fluid with at least this many voxels in `fluid_codes`.
      classes: image_folders only, the class folder names; label = position.
      num_shards: 0 picks about 1000 examples per shard.
      workers: threads reading and encoding (SimpleITK, numpy and zlib release the GIL).
      allow_unlabeled: skip volumes without reference.mhd instead of failing.
      skip_bad: convert the good volumes and list the bad ones instead of failing.
      group_regex: image_folders only: its first capture group, applied to each file stem, is the
        image's volume/id (e.g. the patient), so that grouped folds keep a patient's images together.
      max_volume_bytes: a volume (or reference) whose header promises more data bytes is refused before
        anything is read.
      settings: recorded in the manifest as `flags`.

    Returns:
      The manifest dict.
    """
    output_dir = pathlib.Path(output_dir)
    try:
        occupied = outputs.is_occupied(output_dir) and output_dir.is_dir()
    except OSError as e:
        raise volumes_lib.InputError(f"--output_dir={output_dir}: cannot be read ({e.strerror or e})") from None
    if occupied:
        raise volumes_lib.InputError(f"--output_dir={output_dir}: output directory is not empty")
    outputs.check_target(output_dir, "--output_dir", folder=True)
    if max_volume_bytes < 1:
        raise volumes_lib.InputError(f"--max_volume_bytes must be >= 1, got {max_volume_bytes}")
    if min_fluid_voxels < 1:
        raise volumes_lib.InputError(f"--min_fluid_voxels must be >= 1, got {min_fluid_voxels}")
    bad_codes = [c for c in fluid_codes if c not in volumes_lib.ALL_FLUID]
    if bad_codes or not fluid_codes:
        raise volumes_lib.InputError(f"--fluid_labels must be codes among {','.join(map(str, volumes_lib.ALL_FLUID))}, "
                                     f"got {list(fluid_codes)}")

    if input_format == "retouch":
        wanted = [vendor] if isinstance(vendor, str) else list(vendor or ["all"])
        items = volumes_lib.find_vendor_volumes(input_dir, wanted, skip_bad)
        class_names = list(CLASSES)
        what = "volumes (folders holding oct.mhd)" + ("" if "all" in wanted else f" of vendor {','.join(wanted)}")
    elif input_format == "image_folders":
        items = volumes_lib.find_images(input_dir, classes, group_regex)
        class_names = list(classes)
        what = "images (" + ", ".join(volumes_lib.IMAGE_SUFFIXES) + ")"
    else:
        raise volumes_lib.InputError(f"--input_format must be retouch or image_folders, got {input_format}")
    if group_regex and input_format != "image_folders":
        raise volumes_lib.InputError("--group_regex applies to --input_format=image_folders only "
                                     "(volumes are grouped by their folder)")
    if not items:
        raise volumes_lib.InputError(f"{input_dir}: no {what} found")

    removed = outputs.remove_stale_staging(output_dir)
    if removed:
        shown = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        print(f"{output_dir.parent}: removed {len(removed)} staging folder(s) of killed runs ({shown})",
              file=sys.stderr)
    staging = outputs.staging_dir(output_dir, "--output_dir")
    try:
        try:
            manifest = _write(items, staging, class_names, fluid_codes, min_fluid_voxels,
                              num_shards, workers, allow_unlabeled, skip_bad, max_volume_bytes, progress)
            if input_format == "image_folders":
                manifest.update(group_regex=group_regex or None,
                                num_groups=len({item.volume_id for item in items}))
            manifest.update(input_dir=str(input_dir), input_format=input_format,
                            fluid_labels=list(fluid_codes), min_fluid_voxels=min_fluid_voxels,
                            flags=dict(settings or {}),
                            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
            outputs.write_json(staging / MANIFEST, manifest)
            outputs.publish(staging, output_dir)
        except (OSError, tf.errors.OpError) as e:
            # Inputs are read in volumes.read_item, which names them; what fails here is writing the output.
            reason = (e.strerror if isinstance(e, OSError) else e.message) or str(e)
            raise volumes_lib.InputError(
                f"--output_dir={output_dir}: cannot write ({reason.strip().splitlines()[0][:200]})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _write(items, staging, class_names, codes, min_voxels, num_shards, workers,
           allow_unlabeled, skip_bad, max_volume_bytes, progress):
    """Reads items in parallel and writes them, in item order, into contiguous shards."""
    out = _ShardWriter(staging, *_plan_shards(items, num_shards))
    load = functools.partial(_load, codes=codes, min_voxels=min_voxels, allow_unlabeled=allow_unlabeled,
                             max_volume_bytes=max_volume_bytes)
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
            ahead = _ReadAhead(pool, load, items, workers)
            for i, item in enumerate(items):
                loaded = _loaded_or_skipped(ahead, i, item, skip_bad, out)
                if loaded is None:
                    continue
                bscans, pngs = loaded
                if bscans is None:
                    out.skip(item, "no reference.mhd")
                else:
                    out.add(item, bscans, pngs)
                if progress:
                    progress(i + 1, len(items), bscans, item)
    finally:
        out.close()
    return out.finish(class_names)


def _plan_shards(items, num_shards: int) -> tuple:
    """(shards, examples per shard) for the B-scans the inputs promise; num_shards 0 picks about 1000 per shard."""
    if isinstance(items[0], volumes_lib.ImageItem):
        planned = len(items)
    else:
        planned = sum(volumes_lib.promised_bscans(folder) for folder in items)
    shards = num_shards if num_shards > 0 else max(1, -(-planned // 1000))
    return shards, max(1, -(-planned // shards))


class _ReadAhead:
    """Loads items on a thread pool ahead of the one being written, and hands them out in item order."""

    def __init__(self, pool, load, items, workers: int):
        self._pool, self._load, self._items = pool, load, items
        # Bounded look-ahead keeps memory flat on large inputs while keeping workers busy.
        self._window = max(2, 2 * workers)
        self._futures = {k: self._submit(k) for k in range(min(self._window, len(items)))}

    def _submit(self, k):
        return self._pool.submit(self._load, self._items[k])

    def result(self, i):
        """What loading item i returned (it raises what loading raised); item i + window starts loading first."""
        future = self._futures.pop(i)
        if i + self._window < len(self._items):
            self._futures[i + self._window] = self._submit(i + self._window)
        return future.result()

    def cancel(self) -> None:
        """Drops the loads not started yet."""
        for f in self._futures.values():
            f.cancel()


def _loaded_or_skipped(ahead: _ReadAhead, i: int, item, skip_bad: bool, out: "_ShardWriter"):
    """Item i as loaded; None for a bad item under --skip_bad (listed as skipped), which otherwise stops the run."""
    try:
        return ahead.result(i)
    except volumes_lib.InputError as e:
        if not skip_bad:
            ahead.cancel()
            raise
        out.skip(getattr(item, "path", item), str(e))
        print(f"skipped: {e}", file=sys.stderr)
        return None


class _ShardWriter:
    """Writes examples into contiguous shards in index order, keeping the rows of the index and the manifest."""

    def __init__(self, staging: pathlib.Path, shards: int, per_shard: int):
        self.staging, self.shards, self.per_shard = staging, shards, per_shard
        self.rows, self.volume_rows, self.skipped = [], [], []
        self.writers, self.counts = [], []

    def _shard_for(self, index: int) -> int:
        """The shard of example `index`; shards are opened as the first example of each arrives."""
        shard = min(index // self.per_shard, self.shards - 1)
        while len(self.writers) <= shard:
            self.writers.append(tf.io.TFRecordWriter(str(self.staging / f"shard-{len(self.writers)}.tmp")))
            self.counts.append(0)
        return shard

    def add(self, item, bscans: volumes_lib.BScans, pngs) -> None:
        """Writes one item's examples and their index rows; a volume also gets its row of the manifest."""
        for k, png in enumerate(pngs):
            index = len(self.rows)
            shard = self._shard_for(index)
            height, width = bscans.images.shape[1:]
            values = dict(label=int(bscans.labels[k]), volume_id=bscans.volume_id,
                          slice=int(bscans.slices[k]), vendor=bscans.vendor,
                          irf=int(bscans.irf[k]), srf=int(bscans.srf[k]), ped=int(bscans.ped[k]),
                          source=str(bscans.sources[k]))
            self.writers[shard].write(encode(png, height, width, **{
                "slice_index" if key == "slice" else key: value for key, value in values.items()}))
            self.counts[shard] += 1
            self.rows.append(dict(index=index, shard=shard, **values))
        if not isinstance(item, volumes_lib.ImageItem):
            self.volume_rows.append({
                "id": bscans.volume_id, "vendor": bscans.vendor, "path": str(item),
                "shape": list(bscans.images.shape), "num_bscans": len(bscans),
                "num_fluid": int(bscans.labels.sum()),
                "irf_voxels": int(bscans.irf.sum()), "srf_voxels": int(bscans.srf.sum()),
                "ped_voxels": int(bscans.ped.sum())})

    def skip(self, where, error: str) -> None:
        """Lists an input that was left out, and why, for the manifest."""
        self.skipped.append({"item": str(where), "error": error})

    def close(self) -> None:
        """Closes every shard opened."""
        for writer in self.writers:
            writer.close()

    def finish(self, class_names: list) -> dict:
        """Gives the closed shards their final names and writes index.csv; returns the manifest's counts."""
        if not self.rows:
            raise volumes_lib.InputError("no B-scans converted: every input was skipped")
        # Only now is the shard count final (skipped volumes can leave the last shards short).
        shard_files = []
        for shard, count in enumerate(self.counts):
            name = shard_name(shard, len(self.counts))
            os.rename(self.staging / f"shard-{shard}.tmp", self.staging / name)
            shard_files.append({"file": name, "num_examples": count})
        with open(self.staging / INDEX, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=INDEX_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)
        return _counts(self.rows, self.volume_rows, shard_files, self.skipped, class_names)


def _counts(rows, volume_rows, shard_files, skipped, class_names) -> dict:
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
        raise volumes_lib.InputError(f"{path}: missing; is {records_dir} a directory written by to_tfrecord?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise volumes_lib.InputError(f"{path}: not valid JSON ({e})") from None
