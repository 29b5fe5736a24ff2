"""Converts RETOUCH volumes (or class image folders) to labelled B-scan TFRecords.

  python tools/to_tfrecord.py --input_dir=data/synthetic --output_dir=data/records
"""

import os
import pathlib
import sys

from absl import flags

from octtl import cli
from octtl.errors import InputError
from octtl.data import metaimage
from octtl.data import volumes
from octtl import console

_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Folder searched for volumes (or class folders).")
_FLUID_LABELS = flags.DEFINE_list("fluid_labels", [str(code) for code in volumes.ALL_FLUID],
                                  "Reference codes counted as fluid (1 IRF, 2 SRF, 3 PED).")
_MIN_FLUID_VOXELS = flags.DEFINE_integer("min_fluid_voxels", 1,
                                         "A B-scan is fluid with at least this many fluid voxels.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 0, "Output shards; 0 = about 1000 B-scans each.", lower_bound=0)
_INPUT_FORMAT = flags.DEFINE_enum("input_format", "retouch", ["retouch", "image_folders"],
                                  "retouch: folders with oct.mhd/reference.mhd; image_folders: one folder per class.")
_CLASSES = flags.DEFINE_list("classes", None, "image_folders: class folder names; label = position.")
_ALLOW_UNLABELED = flags.DEFINE_bool("allow_unlabeled", False, "Skip volumes without reference.mhd.")
_SKIP_BAD = flags.DEFINE_bool("skip_bad", False, "Convert the good volumes and list the bad ones.")
_MAX_VOLUME_BYTES = flags.DEFINE_integer(
    "max_volume_bytes", metaimage.MAX_VOLUME_BYTES, "Refuse a volume whose header promises more data bytes than this "
    "(checked before reading, so a lying header cannot exhaust memory).", lower_bound=1)

def main(argv):
    """The to_tfrecord command: converts --input_dir into sharded TFRecords in --output_dir."""
    cli.no_arguments(argv)
    cli.require("input_dir", "output_dir")
    vendor = cli.VENDOR.value or ["all"]
    workers = cli.WORKERS.value or min(4, os.cpu_count() or 1)
    try:
        codes = [int(c) for c in _FLUID_LABELS.value]
    except ValueError:
        raise InputError(f"--fluid_labels must be integers, got {','.join(_FLUID_LABELS.value)}") from None
    from octtl.data import converter

    settings = {name: flags.FLAGS[name].value for name in (
        "input_dir", "output_dir", "fluid_labels", "min_fluid_voxels", "num_shards", "input_format", "classes",
        "allow_unlabeled", "skip_bad", "group_regex", "max_volume_bytes")}
    settings.update(vendor=vendor, workers=workers)
    manifest = converter.convert(
        _INPUT_DIR.value, cli.OUTPUT_DIR.value, input_format=_INPUT_FORMAT.value,
        vendor=vendor, fluid_codes=codes, min_fluid_voxels=_MIN_FLUID_VOXELS.value,
        classes=_CLASSES.value, num_shards=_NUM_SHARDS.value, workers=workers,
        allow_unlabeled=_ALLOW_UNLABELED.value, skip_bad=_SKIP_BAD.value, group_regex=cli.GROUP_REGEX.value,
        max_volume_bytes=_MAX_VOLUME_BYTES.value, settings=settings, progress=progress)
    print(summary(manifest, cli.OUTPUT_DIR.value))

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("output_dir")
flags.declare_key_flag("vendor")
flags.declare_key_flag("workers")
flags.declare_key_flag("group_regex")



def progress(done, total, bscans, item):
    """One line per converted input on stderr (every 1% of them for large inputs): a per-volume counter."""
    if bscans is None:
        print(f"[{done}/{total}] {item}: no reference, skipped", file=sys.stderr)
    elif total <= 200 or done % max(1, total // 100) == 0 or done == total:
        # A volume's B-scans are fluid or normal; an image is of its class folder.
        what = (f"{int(bscans.labels.sum())} fluid" if not hasattr(item, "label")
                else f"{pathlib.Path(item.path).parent.name} ({item.path.name})")
        print(f"[{done}/{total}] {bscans.volume_id} ({bscans.vendor}): {console.count(len(bscans), 'B-scan')}, "
              f"{what}", file=sys.stderr, flush=True)


def summary(manifest, output_dir) -> str:
    """The manifest in a few lines: counts per class and vendor, shards, skipped inputs."""
    n = manifest["num_examples"]
    if manifest["volumes"]:
        origin = f"{manifest['num_volumes']} volume{'s' * (manifest['num_volumes'] != 1)}"
    else:
        origin = f"{n} image{'s' * (n != 1)}"
        if manifest.get("group_regex"):
            origin += f" of {manifest['num_groups']} groups (--group_regex)"
    lines = [f"{output_dir}: {n} B-scans in {len(manifest['shards'])} shard(s) from {origin}"]
    lines.append("  " + ", ".join(f"{name} {count} ({count / n:.0%})"
                                   for name, count in manifest["class_counts"].items()))
    vendors = {}
    for v in manifest["volumes"]:
        vendors.setdefault(v["vendor"], [0, 0])
        vendors[v["vendor"]][0] += 1
        vendors[v["vendor"]][1] += v["num_bscans"]
    for vendor, (count, bscans) in sorted(vendors.items()):
        lines.append(f"  {vendor}: {console.count(count, 'volume')}, {console.count(bscans, 'B-scan')}")
    for skipped in manifest["skipped"]:
        lines.append(f"  skipped {skipped['item']}: {skipped['error']}")
    return "\n".join(lines)


run = cli.command(main)

if __name__ == "__main__":
    run()
