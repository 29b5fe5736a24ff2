"""New OCT data for prediction: one `Scans` (a volume's or an image's B-scans) at a time, from four kinds of input.

Inputs (`read_input`), detected from the path (`input_kind`):
  * `volume`: one `.mhd` file; an `oct.mhd` with `reference.mhd` beside it is labelled;
  * `volumes`: a folder searched for `oct.mhd` files (RETOUCH layout), each reference optional;
  * `records`: a folder of TFRecord shards written by tools/to_tfrecord.py (always labelled), read as its
    manifest lists them (`check_records` refuses classes other than the model's); examples of one volume/id (a
    volume, or a patient with --group_regex) form one Scans, whatever their order and sizes;
  * `images`: one image file or a folder searched for them; each image is a one-B-scan volume named by its
    path under the folder without suffix, unlabelled (convert class folders to records for labels).
Every B-scan carries a source naming it: "<volume id>:<slice>" for volumes, the image/source of records (the
file stem of image folders), the name of an image file.
"""

import dataclasses
import pathlib
from typing import Iterator, List, Optional, Sequence

import numpy as np

from octtl.data import metaimage

from octtl.data import volumes
from octtl.errors import InputError

INPUT_KINDS = ("volume", "volumes", "records", "images")


@dataclasses.dataclass(frozen=True)
class Scans:
    """The B-scans of one volume (or image, or patient) to predict on.

    Attributes:
        volume_id: The name its rows carry.
        source: Where it came from, named in error messages.
        images: uint8 (rows, columns) B-scans; of one size for a volume, possibly of several for records.
        slices: int64 B-scan numbers within the volume.
        sources: The name of each B-scan (see the module docstring).
        labels: int64 per B-scan, when known: 0/1 (normal, fluid) from a reference volume, the class from records.
        masks: bool fluid voxels per B-scan, for reference volumes (the pointing game needs them).
        type_counts: (n, 3) int64 voxels of IRF, SRF and PED per B-scan, where the reference or records tell.
    """

    volume_id: str
    source: str
    images: List[np.ndarray]
    slices: np.ndarray
    sources: np.ndarray
    labels: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    type_counts: Optional[np.ndarray] = None


def _image_files(folder: pathlib.Path) -> list:
    return volumes.find_files(folder, volumes.IMAGE_SUFFIXES)


def input_kind(path) -> str:
    """Which of INPUT_KINDS `path` is; InputError naming it when it is none of them."""
    from octtl.data import records

    path = pathlib.Path(path)
    expected = (f"expected a .mhd volume, a folder of volumes (oct.mhd), a TFRecord folder "
                f"({records.SHARD_PATTERN}) or image files ({', '.join(volumes.IMAGE_SUFFIXES)})")
    if not path.exists():
        raise InputError(f"{path}: does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".mhd":
            return "volume"
        if suffix in volumes.IMAGE_SUFFIXES:
            return "images"
        raise InputError(f"{path}: not an input predict can read; {expected}")
    if records.shard_paths(path):
        return "records"
    if volumes.find_volumes(path):
        return "volumes"
    if _image_files(path):
        return "images"
    raise InputError(f"{path}: holds nothing predict can read; {expected}")


def read_input(path, fluid_codes: Sequence[int] = volumes.ALL_FLUID, min_fluid_voxels: int = 1,
               classes: Optional[Sequence[str]] = None, group_regex: Optional[str] = None) -> Iterator[Scans]:
    """The B-scans under `path`, one Scans per volume or image, read lazily in a stable order.

    The kind is checked at once (InputError before anything is read); a bad volume raises when reached. An image
    folder holding a subfolder for each of `classes` (the model's) is read as labelled class folders
    (`class_folders`), one Scans per image or, with `group_regex`, per group (a patient).
    """
    path = pathlib.Path(path)
    kind = input_kind(path)
    codes = tuple(fluid_codes)
    if kind == "volume":
        return _within_limits(_read_mhd_input(path, codes, min_fluid_voxels) for _ in (path,))
    if kind == "volumes":
        folders = volumes.find_volumes(path)
        ids = _unique_ids(folders, path)
        return _within_limits(_read_volume(folder, vid, codes, min_fluid_voxels) for folder, vid in zip(folders, ids))
    if kind == "records":
        return _read_records(path)
    if classes is not None and class_folders(path, classes):
        return _read_class_folders(path, classes, group_regex)
    files = [path] if path.is_file() else _image_files(path)
    ids = [p.stem for p in files] if path.is_file() else [p.relative_to(path).with_suffix("").as_posix()
                                                          for p in files]
    return (_read_image(p, vid) for p, vid in zip(files, ids))


def class_folders(path, classes: Sequence[str]) -> bool:
    """Whether `path` is a folder with a subfolder named for each of `classes`: images labelled by their folder."""
    path = pathlib.Path(path)
    return path.is_dir() and len(classes) > 1 and all((path / name).is_dir() for name in classes)


def _read_class_folders(path, classes: Sequence[str], group_regex: Optional[str]) -> Iterator[Scans]:
    """The images of the class folders (label: the folder's place in `classes`), one Scans per group in id order."""
    groups = {}
    for item in volumes.find_images(path, classes, group_regex):
        groups.setdefault(item.volume_id, []).append(item)
    for volume_id in sorted(groups):
        read = [volumes.read_image_file(item) for item in sorted(groups[volume_id], key=lambda i: i.slice)]
        yield Scans(volume_id=volume_id, source=f"{path} ({volume_id})", images=[b.images[0] for b in read],
                    slices=np.array([b.slices[0] for b in read], np.int64),
                    sources=np.array([b.sources[0] for b in read], dtype=object),
                    labels=np.array([b.labels[0] for b in read], np.int64))


def check_records(records_dir, classes: Sequence[str]) -> List[str]:
    """Refuses records whose classes are not `classes` (the model's); returns notes: the shards nothing reads.

    Predict reads exactly the shards the manifest lists, as training does; a file named like a shard that it does
    not list (a copy, another conversion's shard) is named in a note and left unread.
    """
    from octtl.data import records

    records_dir = pathlib.Path(records_dir)
    manifest = records.read_manifest(records_dir)
    theirs = manifest.get("classes", list(records.CLASSES))
    if not isinstance(theirs, list) or [str(c) for c in theirs] != list(classes):
        shown = ", ".join(map(str, theirs)) if isinstance(theirs, list) else repr(theirs)[:60]
        raise InputError(f"{records_dir / records.MANIFEST}: classes {shown} are not the model's "
                         f"({', '.join(classes)}), whose labels predict would misread; predict on the images or "
                         f"volumes themselves, or convert them with the model's classes")
    records.listed_shards(records_dir, manifest)
    note = records.unlisted_note(records_dir, manifest)
    return [note] if note else []


def _within_limits(scans: Iterator[Scans]) -> Iterator[Scans]:
    """`scans`, with a volume larger than predict reads refused in words predict's user can act on."""
    try:
        yield from scans
    except metaimage.TooLarge as e:
        raise InputError(f"{e.path}: header promises {e.promised} bytes ({e.what}), more than the {e.limit} bytes "
                         "predict reads from one volume; predict on its B-scans as image files, or on records "
                         f"converted with python tools/to_tfrecord.py --max_volume_bytes={e.promised}") from None


def _unique_ids(folders, root) -> list:
    """Folder names as volume ids, or paths under `root` when names repeat (e.g. two vendors' TRAIN001)."""
    names = [folder.name for folder in folders]
    if len(set(names)) == len(names):
        return names
    return [folder.relative_to(root).as_posix() if folder != root else folder.name for folder in folders]


def _read_mhd_input(path, codes, min_voxels) -> Scans:
    path = pathlib.Path(path)
    if path.name == "oct.mhd":
        return _read_volume(path.parent, path.parent.name, codes, min_voxels)
    return _read_unlabelled(path, path.stem)


def _volume_scans(volume_id, source, images, **labels) -> Scans:
    slices = np.arange(len(images), dtype=np.int64)
    return Scans(volume_id=volume_id, source=source, images=list(images), slices=slices,
                 sources=volumes.volume_sources(volume_id, slices), **labels)


def _read_volume(folder, volume_id, codes, min_voxels) -> Scans:
    """A RETOUCH volume folder: labels and fluid masks when reference.mhd is there."""
    import SimpleITK as sitk

    folder = pathlib.Path(folder)
    reference_path = folder / "reference.mhd"
    if not reference_path.is_file():
        return _read_unlabelled(folder / "oct.mhd", volume_id)
    bscans = volumes.read_volume(folder, codes=codes, min_voxels=min_voxels)
    # read_volume has validated the reference; its voxels are read again for the masks it does not return.
    reference = sitk.GetArrayFromImage(metaimage.read_image(reference_path))
    return _volume_scans(volume_id, str(folder / "oct.mhd"), bscans.images, labels=bscans.labels,
                         masks=np.isin(reference, codes),
                         type_counts=np.stack([bscans.irf, bscans.srf, bscans.ped], axis=1).astype(np.int64))


def _read_unlabelled(path, volume_id) -> Scans:
    import SimpleITK as sitk

    image = metaimage.read_image(path)
    try:
        pixels = volumes.to_uint8(sitk.GetArrayFromImage(image))
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
    return _volume_scans(volume_id, str(path), pixels)


def _read_image(path, volume_id) -> Scans:
    bscans = volumes.read_image_file(volumes.ImageItem(pathlib.Path(path), 0, volume_id, 0))
    return Scans(volume_id=volume_id, source=str(path), images=list(bscans.images), slices=bscans.slices,
                 sources=np.array([volume_id], dtype=object))


def _read_records(records_dir) -> Iterator[Scans]:
    """The examples of each volume/id as one Scans, in order of first appearance, with their labels (classes)
    and voxel counts per fluid type; read without TensorFlow, as training reads them (octtl.data.records)."""
    from octtl.data import images, records

    keys = (records.IMAGE, records.LABEL, records.VOLUME_ID, records.SLICE, records.SOURCE, records.IRF,
            records.SRF, records.PED)
    groups = {}
    paths = records.listed_shards(records_dir, records.read_manifest(records_dir))
    for example in records.examples(paths, keys):
        volume_id, slice_index = example[records.VOLUME_ID], int(example[records.SLICE])
        groups.setdefault(volume_id, []).append((
            images.decode_png(example[records.IMAGE])[..., 0], slice_index,
            example[records.SOURCE] or f"{volume_id}:{slice_index}", int(example[records.LABEL]),
            [int(example[key]) for key in (records.IRF, records.SRF, records.PED)]))
    for volume_id, members in groups.items():
        yield Scans(volume_id=volume_id, source=f"{records_dir} (volume {volume_id})",
                    images=[m[0] for m in members], slices=np.array([m[1] for m in members], np.int64),
                    sources=np.array([m[2] for m in members], dtype=object),
                    labels=np.array([m[3] for m in members], np.int64),
                    type_counts=np.array([m[4] for m in members], np.int64))
