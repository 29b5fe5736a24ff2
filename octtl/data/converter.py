"""The converter: RETOUCH volumes or class image folders into sharded TFRecords (`python -m octtl.to_tfrecord`).

Items are read on a thread pool (SimpleITK, numpy and zlib release the GIL) a bounded window ahead of the one
being written, and written in item order into contiguous shards with their index.csv and manifest.json
(octtl.data.records, the schema). Nothing appears at the output folder until everything is written: the work
happens in a staging sibling that is renamed at the end (octtl.outputs).
"""

import concurrent.futures
import datetime
import functools
import os
import pathlib
import sys
from typing import Callable, Optional, Sequence

from octtl import outputs
from octtl.data import metaimage, records, tfrecord
from octtl.data import volumes as volumes_lib
from octtl.errors import InputError


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
    _check_settings(output_dir, fluid_codes, min_fluid_voxels, max_volume_bytes)
    items, class_names = _find_items(input_dir, input_format, vendor, classes, group_regex, skip_bad)
    removed = outputs.remove_stale_staging(output_dir)
    if removed:
        shown = ", ".join(p.name for p in removed[:3]) + (", ..." if len(removed) > 3 else "")
        print(f"{output_dir.parent}: removed {len(removed)} staging folder(s) of killed runs ({shown})",
              file=sys.stderr)
    with outputs.staged(output_dir, "--output_dir") as staging:
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
            outputs.write_json(staging / records.MANIFEST, manifest)
            outputs.publish(staging, output_dir)
        except OSError as e:
            # Inputs are read in volumes.read_item, which names them; what fails here is writing the output.
            reason = e.strerror or str(e)
            raise InputError(
                f"--output_dir={output_dir}: cannot write ({reason.strip().splitlines()[0][:200]})") from None
    return manifest


def _check_settings(output_dir: pathlib.Path, fluid_codes, min_fluid_voxels: int, max_volume_bytes: int):
    """Refuses an output folder that is taken or cannot be made, and settings out of range, before reading."""
    try:
        occupied = outputs.is_occupied(output_dir) and output_dir.is_dir()
    except OSError as e:
        raise InputError(f"--output_dir={output_dir}: cannot be read ({e.strerror or e})") from None
    if occupied:
        raise InputError(f"--output_dir={output_dir}: output directory is not empty")
    outputs.check_target(output_dir, "--output_dir", folder=True)
    if max_volume_bytes < 1:
        raise InputError(f"--max_volume_bytes must be >= 1, got {max_volume_bytes}")
    if min_fluid_voxels < 1:
        raise InputError(f"--min_fluid_voxels must be >= 1, got {min_fluid_voxels}")
    bad_codes = [c for c in fluid_codes if c not in volumes_lib.ALL_FLUID]
    if bad_codes or not fluid_codes:
        raise InputError(f"--fluid_labels must be codes among {','.join(map(str, volumes_lib.ALL_FLUID))}, "
                         f"got {list(fluid_codes)}")


def _find_items(input_dir, input_format: str, vendor, classes, group_regex, skip_bad: bool) -> tuple:
    """(the items to convert: volume folders or images, the class names), refused in one line when none."""
    if input_format == "retouch":
        wanted = [vendor] if isinstance(vendor, str) else list(vendor or ["all"])
        items = volumes_lib.find_vendor_volumes(input_dir, wanted, skip_bad)
        class_names = list(records.CLASSES)
        what = "volumes (folders holding oct.mhd)" + ("" if "all" in wanted else f" of vendor {','.join(wanted)}")
    elif input_format == "image_folders":
        items = volumes_lib.find_images(input_dir, classes, group_regex)
        class_names = list(classes)
        what = "images (" + ", ".join(volumes_lib.IMAGE_SUFFIXES) + ")"
    else:
        raise InputError(f"--input_format must be retouch or image_folders, got {input_format}")
    if group_regex and input_format != "image_folders":
        raise InputError("--group_regex applies to --input_format=image_folders only "
                         "(volumes are grouped by their folder)")
    if not items:
        raise InputError(f"{input_dir}: no {what} found")
    return items, class_names


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
    except InputError as e:
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
            self.writers.append(tfrecord.Writer(self.staging / f"shard-{len(self.writers)}.tmp"))
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
            self.writers[shard].write(records.encode(png, height, width, **{
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
            raise InputError("no B-scans converted: every input was skipped")
        # Only now is the shard count final (skipped volumes can leave the last shards short).
        shard_files = []
        for shard, count in enumerate(self.counts):
            name = records.shard_name(shard, len(self.counts))
            os.rename(self.staging / f"shard-{shard}.tmp", self.staging / name)
            shard_files.append({"file": name, "num_examples": count})
        records.write_index(self.staging / records.INDEX, self.rows)
        return records.manifest_counts(self.rows, self.volume_rows, shard_files, self.skipped, class_names)


