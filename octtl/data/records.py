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
from typing import Iterator

import numpy as np

from octtl import outputs
from octtl.data import example_proto, names, tfrecord
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

# Every key's kind: bytes or int64, one value each (what tf.io.FixedLenFeature([]) would read).
SCHEMA = {IMAGE: bytes, HEIGHT: int, WIDTH: int, LABEL: int, VOLUME_ID: bytes, SLICE: int, VENDOR: bytes,
          IRF: int, SRF: int, PED: int, SOURCE: bytes}
# Records written before image/source existed read with an empty one.
DEFAULTS = {SOURCE: b""}
TEXT = (VOLUME_ID, VENDOR, SOURCE)  # bytes keys that hold text

CLASSES = ("normal", "fluid")
MANIFEST = "manifest.json"
INDEX = "index.csv"
INDEX_COLUMNS = ("index", "shard", "volume_id", "slice", "label", "vendor", "irf", "srf", "ped", "source")
SHARD_PATTERN = "bscans-*-of-*.tfrecord"
AGAIN = "convert the data again with tools/to_tfrecord.py"  # the remedy for records that cannot be read


def shard_name(shard: int, num_shards: int) -> str:
    """The file name of shard `shard` of `num_shards` (0-based), which SHARD_PATTERN matches."""
    return f"bscans-{shard:05d}-of-{num_shards:05d}.tfrecord"


def encode(png: bytes, height: int, width: int, label: int, volume_id: str, slice_index: int,
           vendor: str, irf: int, srf: int, ped: int, source: str) -> bytes:
    """One B-scan as a serialized tf.train.Example with exactly the keys of SCHEMA (no TensorFlow needed)."""
    return example_proto.encode({
        IMAGE: png, HEIGHT: int(height), WIDTH: int(width), LABEL: int(label), VOLUME_ID: volume_id.encode(),
        SLICE: int(slice_index), VENDOR: vendor.lower().encode(), IRF: int(irf), SRF: int(srf), PED: int(ped),
        SOURCE: source.encode()})


def parse(payload: bytes, keys=None, path=None) -> dict:
    """One serialized Example as {key: value} for `keys` (default every SCHEMA key); text keys as str.

    Raises:
        InputError: an Example without one of the keys, or with one of another kind: not octtl records (named by
            `path`, with the remedy).
    """
    keys = list(SCHEMA) if keys is None else list(keys)
    try:
        parsed = example_proto.parse(payload)
    except ValueError as e:
        raise InputError(f"{path}: not octtl records ({e}); {AGAIN}") from None
    out = {}
    for key in keys:
        values = parsed.get(key)
        if not values:
            if key not in DEFAULTS:
                raise InputError(f"{path}: not octtl records (no {key} in its examples); {AGAIN}")
            values = [DEFAULTS[key]]
        value = values[0]
        if not isinstance(value, SCHEMA[key]) or isinstance(value, bool) or len(values) != 1:
            raise InputError(f"{path}: not octtl records ({key} is of another type); {AGAIN}")
        out[key] = value.decode() if key in TEXT else value
    return out


def examples(paths, keys=None) -> Iterator[dict]:
    """The examples of the shards `paths`, in order, parsed (`parse`); CRCs checked (octtl.data.tfrecord).

    Raises:
        InputError: a damaged or truncated shard, or records of another schema, naming the file.
    """
    for path in paths:
        for payload in tfrecord.read(path):
            yield parse(payload, keys, path)


def shard_paths(records_dir) -> list:
    """The files of a folder named like shards (SHARD_PATTERN), in name order: what marks a folder as records."""
    return sorted(str(p) for p in pathlib.Path(records_dir).glob(SHARD_PATTERN))


def listed_shards(records_dir, manifest: dict) -> list:
    """The shards a dataset's manifest lists, in index order (every file named like a shard where it lists none).

    Raises:
        InputError: A listed shard that is missing, or named outside the folder (names.inside), naming it.
    """
    records_dir = pathlib.Path(records_dir)
    entries = manifest.get("shards") or []
    if not isinstance(entries, list):
        raise InputError(f"{records_dir / MANIFEST}: shards is not a list; {AGAIN}")
    if not entries:
        return [pathlib.Path(p) for p in shard_paths(records_dir)]
    paths = []
    for entry in entries:
        name = entry.get("file") if isinstance(entry, dict) else None
        path = names.inside(records_dir, name, records_dir / MANIFEST, "shards[].file")
        if not path.is_file():
            raise InputError(f"{path}: shard listed in {MANIFEST} is missing; {AGAIN}")
        paths.append(path)
    return paths


def unlisted_shards(records_dir, manifest: dict) -> list:
    """Files named like shards that the manifest does not list (a copy left there, another conversion's shard):
    nothing reads them."""
    records_dir = pathlib.Path(records_dir)
    listed = {path.resolve() for path in listed_shards(records_dir, manifest)}
    return [pathlib.Path(p) for p in shard_paths(records_dir) if pathlib.Path(p).resolve() not in listed]


def unlisted_note(records_dir, manifest: dict):
    """One line naming the unlisted shards (`unlisted_shards`), or None when there are none."""
    extra = unlisted_shards(records_dir, manifest)
    if not extra:
        return None
    shown = ", ".join(p.name for p in extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
    return f"{records_dir}: {shown} not listed in {MANIFEST}, not read (only the manifest's shards are)"


def write_index(path, rows):
    """index.csv: one row per example, INDEX_COLUMNS in order (text cells as octtl.outputs writes them)."""
    outputs.write_csv(path, INDEX_COLUMNS, rows)


def manifest_counts(rows, volume_rows, shard_files, skipped, class_names) -> dict:
    """The manifest's counts of examples, classes, volumes and shards, and what was skipped."""
    labels = np.array([r["label"] for r in rows])
    counts = {name: int(np.count_nonzero(labels == k)) for k, name in enumerate(class_names)}
    fluid_task = list(class_names) == list(CLASSES)  # fluid and normal counts only where those are the classes
    return {
        "num_examples": len(rows),
        **({"num_normal": int(np.count_nonzero(labels == 0)), "num_fluid": int(np.count_nonzero(labels != 0))}
           if fluid_task else {}),
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
    try:
        header, rows = outputs.read_csv(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot be read ({getattr(e, 'strerror', None) or e})") from None
    # Datasets converted before image/source existed lack its column.
    if not rows or header not in (list(INDEX_COLUMNS), list(INDEX_COLUMNS[:-1])):
        raise InputError(f"{path}: expected columns {','.join(INDEX_COLUMNS)}")
    integers = {name: _integers(path, rows, name) for name in ("index", "slice", "label", "irf", "srf", "ped")}
    if list(integers["index"]) != list(range(len(rows))):
        raise InputError(f"{path}: index column is not 0..{len(rows) - 1} in order")
    column = lambda name: np.array([r[name] for r in rows], dtype=object)  # noqa: E731
    volume_ids, slices = column("volume_id"), integers["slice"]
    sources = column("source") if "source" in header else np.array([""] * len(rows), dtype=object)
    return Metadata(labels=integers["label"], volume_ids=volume_ids, slices=slices, vendors=column("vendor"),
                    irf=integers["irf"], srf=integers["srf"], ped=integers["ped"],
                    sources=_named_sources(sources, volume_ids, slices))


def _integers(path, rows, name) -> np.ndarray:
    """A column of index.csv as int64; one line naming the first row whose cell is not an integer."""
    try:
        return np.array([int(r[name]) for r in rows], dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        number = next(k for k, r in enumerate(rows) if not _is_integer(r[name]))
        raise InputError(f"{path}: row {number + 2}: {name} = {str(rows[number][name])[:40]!r} is not an integer; "
                         f"{AGAIN}") from None


def _is_integer(text) -> bool:
    try:
        return -2 ** 63 <= int(text) < 2 ** 63
    except (TypeError, ValueError):
        return False


def _named_sources(sources, volume_ids, slices) -> np.ndarray:
    """image/source, with "<volume id>:<slice>" where a dataset converted before it existed has none."""
    return np.array([s or f"{v}:{int(k)}" for s, v, k in zip(sources, volume_ids, slices)], dtype=object)


def scan_metadata(records_dir) -> Metadata:
    """Per-example metadata read from the records themselves (the image bytes are not decoded).

    The shards are the manifest's where there is one (`listed_shards`), else every file named like a shard.
    """
    records_dir = pathlib.Path(records_dir)
    manifest = read_manifest(records_dir) if (records_dir / MANIFEST).is_file() else {}
    keys = [k for k in SCHEMA if k != IMAGE]
    rows = list(examples(listed_shards(records_dir, manifest), keys))

    def column(key, dtype):
        return np.array([r[key] for r in rows], dtype=dtype)

    volume_ids, slices = column(VOLUME_ID, object), column(SLICE, np.int64)
    return Metadata(labels=column(LABEL, np.int64), volume_ids=volume_ids, slices=slices,
                    vendors=column(VENDOR, object), irf=column(IRF, np.int64), srf=column(SRF, np.int64),
                    ped=column(PED, np.int64), sources=_named_sources(column(SOURCE, object), volume_ids, slices))


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
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise InputError(f"{path}: not a manifest (expected a JSON object)")
    return manifest
