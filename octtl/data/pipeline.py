"""The data a training session reads: per-example metadata, B-scans decoded once, and the batches it trains on.

`read_metadata` reads index.csv (labels, volume ids, sources) without touching an image; `decode` decodes and
crops every B-scan once into memory, checking the records against index.csv and manifest.json and naming a
damaged shard; `training_batches` and `padded_batches` feed them to the network. Host-side work stays on
1-channel uint8 crops (a 224 x 224 crop is 50 KB): gray to 3 channels and the input scaling happen inside the
model, where they cost nothing on an accelerator.

Reading and decoding need no TensorFlow (octtl.data.records, images), so every Keras backend trains on the same
crops. `crop`, `rescale` and `training_batches` are TensorFlow's forms, for the tf.data pipeline of TensorFlow's
backend and the exported SavedModel; they import it when called, so that the commands' flags can list CROPS
without starting it.
"""

import concurrent.futures
import dataclasses
import os
import pathlib
import time
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import numpy as np

from octtl.errors import InputError

if TYPE_CHECKING:
    import tensorflow as tf

    from octtl.data.records import Metadata

CROPS = ("center", "resize")
RESCALES = ("paper", "none")


def crop(image, image_size: int, mode: str = "center"):
    """A (size, size, 1) uint8 view of one B-scan: centre crop (zero-padded if smaller) or resize."""
    import tensorflow as tf

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
    import tensorflow as tf

    if mode == "paper":
        return tf.cast(images, tf.float32) / 127.5 - 1.0
    if mode == "none":
        return images
    raise ValueError(f"rescale mode must be one of {RESCALES}, got {mode!r}")


@dataclasses.dataclass(frozen=True)
class Decoded:
    """Every B-scan of a converted dataset decoded and cropped once: what a training session keeps in memory.

    Attributes:
        images: uint8 (n, side, side, 1), side = size + 2 margin; row i is index.csv's row i. The paper's 1176
            B-scans take 59 MB at 224 px and 105 MB at 299 px (without a margin).
        labels: int32 (n,).
        margin: Pixels kept beyond the crop on each side, for shifting and zooming augmentations (octtl.data.augment);
            the central size x size window is the crop.
        seconds: What decoding took (denoising included): a one-off cost per training session.
    """

    images: np.ndarray
    labels: np.ndarray
    margin: int = 0
    seconds: float = 0.0

    @property
    def crops(self) -> np.ndarray:
        """The crops themselves (the views' central windows): what validation sees."""
        m = self.margin
        return self.images if m == 0 else self.images[:, m:self.images.shape[1] - m, m:self.images.shape[2] - m]


def decode(records_dir, metadata: "Metadata", image_size: int, crop_mode: str = "center", *, margin: int = 0,
           view: Optional[Callable] = None, prefilter: Optional[Callable] = None, workers: int = 0) -> Decoded:
    """Decodes and crops every example once, checking the records against index.csv and manifest.json.

    In NumPy and Pillow on every Keras backend (octtl.data.tfrecord, example_proto, images), so the crops are
    the same whichever runs the network: octtl.data.images reproduces TensorFlow's decode_png, its
    resize_with_crop_or_pad and its antialiased resize exactly. Examples are decoded on a thread pool in chunks
    and checked in order as they come, so a damaged shard is named while it is read, and nothing is decoded
    twice.

    Args:
        records_dir: Records written by tools/to_tfrecord.py.
        metadata: Their index (records.read_metadata).
        image_size: The crop's side.
        crop_mode: 'center' or 'resize' (`crop`).
        margin: Pixels beyond the crop on each side that `view` keeps (0: the crop itself).
        view: Maps a whole (rows, cols, 1) uint8 B-scan to its (size + 2 margin)^2 view; default the crop.
        prefilter: Maps a whole (rows, cols, 1) uint8 B-scan to another, before the crop: --denoise.
        workers: Decoding threads (0: the machine's cores, at most 8).

    Raises:
        InputError: A shard that is missing, truncated, damaged or not octtl's (named, with the remedy), records
            whose count, labels, volume ids or slices disagree with index.csv or the manifest, or crops that do
            not fit in memory (checked first against what the host has available; naming --image_size).
    """
    from octtl.data import images as image_ops
    from octtl.data import records

    if crop_mode not in CROPS:
        raise ValueError(f"crop mode must be one of {CROPS}, got {crop_mode!r}")
    records_dir = pathlib.Path(records_dir)
    manifest = records.read_manifest(records_dir)
    try:
        expected = int(manifest.get("num_examples", -1))
    except (TypeError, ValueError):
        raise InputError(f"{records_dir / records.MANIFEST}: num_examples is not a number; {_AGAIN}") from None
    if expected != len(metadata):
        raise InputError(f"{records_dir / records.INDEX}: {len(metadata)} rows, but {records.MANIFEST} says "
                         f"{expected} examples; {_AGAIN}")
    paths = records.listed_shards(records_dir, manifest)
    side = image_size + 2 * margin
    needed = len(metadata) * side * side
    available = host_available_bytes()
    if available is not None and needed > available:
        raise InputError(_memory_message(len(metadata), side, image_size, needed, f"{available} bytes available"))
    cut = view or (lambda image: image_ops.crop(image, image_size, crop_mode))

    def one(png: bytes) -> np.ndarray:
        image = image_ops.decode_png(png)
        return cut(prefilter(image) if prefilter is not None else image)

    started = time.perf_counter()
    try:
        images = np.zeros((len(metadata), side, side, 1), np.uint8)
    except MemoryError:
        raise InputError(_memory_message(len(metadata), side, image_size, needed, "out of memory")) from None
    keys = (records.IMAGE, records.LABEL, records.VOLUME_ID, records.SLICE)
    start = 0
    threads = workers or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for chunk in _chunks(records.examples(paths, keys), 64):
            stop = start + len(chunk)
            if stop > len(metadata):
                raise InputError(f"{records_dir}: more records than the {len(metadata)} rows of {records.INDEX}; "
                                 f"{_AGAIN}")
            _check_rows(records_dir, metadata, start, np.array([e[records.LABEL] for e in chunk]),
                        [e[records.VOLUME_ID] for e in chunk], np.array([e[records.SLICE] for e in chunk]))
            try:
                images[start:stop] = list(pool.map(one, [e[records.IMAGE] for e in chunk]))
            except MemoryError:
                raise InputError(_memory_message(len(metadata), side, image_size, needed, "out of memory")) from None
            start = stop
    if start != len(metadata):
        raise InputError(f"{records_dir}: the shards hold {start} records, but {records.INDEX} has "
                         f"{len(metadata)} rows; {_AGAIN}")
    return Decoded(images=images, labels=metadata.labels.astype(np.int32), margin=margin,
                   seconds=time.perf_counter() - started)


def _chunks(items, size: int):
    """Lists of up to `size` consecutive items."""
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


_AGAIN = "convert the data again with tools/to_tfrecord.py"


def _memory_message(count: int, side: int, image_size: int, needed: int, why: str) -> str:
    return (f"--image_size={image_size}: decoding {count} B-scans of {side} x {side} pixels needs {needed} bytes of "
            f"memory ({why}); use a smaller --image_size")


def host_available_bytes() -> Optional[int]:
    """MemAvailable from /proc/meminfo, None where there is no such file."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _check_rows(records_dir, metadata: "Metadata", start, labels, volume_ids, slices):
    """Fails naming the first index.csv row whose label, volume id or slice its record contradicts."""
    from octtl.data import records

    stop = start + len(labels)
    wrong = np.flatnonzero((metadata.labels[start:stop] != labels)
                           | (metadata.slices[start:stop] != slices)
                           | (metadata.volume_ids[start:stop] != np.array(list(volume_ids), dtype=object)))
    if wrong.size:
        k = int(wrong[0])
        i = start + k
        raise InputError(
            f"{pathlib.Path(records_dir) / records.INDEX}: row {i} says {metadata.volume_ids[i]} slice "
            f"{int(metadata.slices[i])} label {int(metadata.labels[i])}, but record {i} is "
            f"{volume_ids[k]} slice {int(slices[k])} label {int(labels[k])}; {_AGAIN}")


def training_batches(decoded: Decoded, indices: Sequence[int], batch_size: int, seed: int,
                     targets: Optional[np.ndarray] = None) -> "tf.data.Dataset":
    """(images, labels) batches of the examples at `indices`, reshuffled every epoch, the last partial one dropped.

    The shuffle is tf.data's, seeded: the same seed gives the same batches, run after run and process after
    process. Dropping the last partial batch is MATLAB's training default, which the paper used. `targets`
    (default the labels) are what the network learns per example: the label, or one 0/1 per fluid type.
    """
    import tensorflow as tf

    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ValueError("no examples selected")
    targets = decoded.labels if targets is None else targets
    ds = tf.data.Dataset.from_tensor_slices((decoded.images[indices], targets[indices]))
    ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def padded_batches(images: np.ndarray, batch_size: int):
    """`images` in batches of exactly `batch_size` (the last zero-padded) and the real count of each.

    Fixed shapes let one traced evaluation step serve every validation set of a session.
    """
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        count = len(batch)
        if count < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - count,) + batch.shape[1:], batch.dtype)])
        yield batch, count
