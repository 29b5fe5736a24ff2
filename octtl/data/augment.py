"""Training-time augmentation of B-scans (--augment, --augment_strength): seeded, on training batches only.

The transformations and their ranges at strength s (`ranges`; s = 1 gives the issue's numbers, s scales them
all; 0 < s < 5, where the gain's lower end would reach 0):
  flip: left-right mirror with probability 0.5 (B-scans of left and right eyes are mirror images).
  shift: translation by whole pixels, uniform over -floor(0.1 s size)..floor(0.1 s size) along each axis.
  scale: zoom z uniform in [1 - 0.1 s, 1 + 0.1 s]; the output shows a window of side size / z, resampled
      bilinearly (z > 1 enlarges).
  intensity: y = gain * x^gamma on [0, 1], gain uniform in [1 - 0.2 s, 1 + 0.2 s], gamma log-uniform in
      [1.25^-s, 1.25^s], clipped to [0, 1]: black stays black and the order of grey levels is kept.
  speckle: multiplicative noise, y = x (1 + n) with n ~ N(0, (0.1 s)^2) per pixel, clipped to [0, 255].
They are applied in that order (zoom and shift as one crop), whatever order --augment lists them in, and the
result is rounded back to uint8 once, so training and validation batches keep one dtype.

Shift and scale need pixels outside the crop. They come from the B-scan itself, not from padding: decoding keeps
a *view* of each B-scan larger than the crop by `margin` pixels on every side (`view`), whose central size x size
window is exactly the crop training without augmentation sees (validation takes that window: `center`). Views
cost memory in proportion: the paper's 1176 B-scans at 299 + 2 x 47 px take 182 MB instead of 105 MB.
  --crop=center: the view is the B-scan's centre crop of side size + 2 margin, at native pixel scale. B-scans are
      496 x 512 or larger and the margin is at most a few tens of pixels at s = 1 (47 for a 299 crop with both
      shift and scale), so the view normally lies inside the B-scan. Where it does not, the B-scan is continued
      by mirror reflection (edge pixel not repeated), and a B-scan smaller than the crop itself is first
      zero-padded to it exactly as octtl.data.pipeline.crop does.
  --crop=resize: the crop is the whole B-scan resized to size x size, so nothing lies outside it: the view is
      the same resize (same scale per axis) continued over the B-scan's mirror reflection, so a shifted or
      zoomed-out window shows reflected B-scan rather than black. Its central window is replaced by
      octtl.data.pipeline.crop's own resize, so it is exact; at that seam the antialiasing kernels of the two resizes
      differ by a few grey levels.
`margin` is 0 without shift and scale, and the view is then octtl.data.pipeline.crop's crop itself.

Randomness is stateless (`tf.random.stateless_*`): each batch draws from a seed of its own, taken from a
`tf.data.Dataset.random` stream seeded with the run's seed and drawn anew every epoch, so a run is reproducible
and two runs with the same seed train on the same batches. Each transformation has its own stream, so switching
one on does not change what another draws.
"""

from typing import Sequence

import numpy as np
import tensorflow as tf

from octtl.data import pipeline

# The transformations, their ranges and the margins they need are octtl.data.augment_numpy's (one owner); this
# module is their TensorFlow form, which the tf.data pipeline of the TensorFlow backend maps over batches.
from octtl.data.augment_numpy import GAMMA, GEOMETRIC, check_views, max_shift, ranges  # noqa: E402

# Which slot of a batch's split seed each transformation draws from.
_ZOOM, _SHIFT, _FLIP, _INTENSITY, _SPECKLE = range(5)


def view(image, size: int, margin: int, crop_mode: str = "center"):
    """A (size + 2 margin)^2 uint8 view of one B-scan whose central size x size window is pipeline.crop's crop.

    Args:
        image: uint8 (rows, columns, 1), the whole (denoised) B-scan.
        size: The crop's side.
        margin: Extra pixels on each side (`margin`); 0 gives pipeline.crop's crop itself.
        crop_mode: --crop; how the view extends beyond the B-scan is in the module docstring.
    """
    if crop_mode not in pipeline.CROPS:
        raise ValueError(f"crop mode must be one of {pipeline.CROPS}, got {crop_mode!r}")
    if margin == 0:
        return pipeline.crop(image, size, crop_mode)
    image = tf.convert_to_tensor(image)
    side = size + 2 * margin
    if crop_mode == "center":
        # As pipeline.crop: a B-scan smaller than the crop is zero-padded to it, then the view is centred alike.
        rows, cols = tf.shape(image)[0], tf.shape(image)[1]
        padded = tf.image.resize_with_crop_or_pad(image, tf.maximum(rows, size), tf.maximum(cols, size))
        rows, cols = tf.shape(padded)[0], tf.shape(padded)[1]
        out = tf.gather(padded, _reflect(tf.range(side) + (rows - size) // 2 - margin, rows), axis=0)
        return tf.gather(out, _reflect(tf.range(side) + (cols - size) // 2 - margin, cols), axis=1)
    exact = pipeline.crop(image, size, "resize")
    shape = tf.shape(image)[:2]
    scale = tf.cast([size, size], tf.float32) / tf.cast(shape, tf.float32)  # as tf.image.resize computes it
    # Enough reflected rows and columns for the margin and the antialiasing kernel's reach.
    pad = tf.cast(tf.math.ceil((margin + 2) / scale), tf.int32) + 1
    padded = tf.gather(image, _reflect(tf.range(-pad[0], shape[0] + pad[0]), shape[0]), axis=0)
    padded = tf.gather(padded, _reflect(tf.range(-pad[1], shape[1] + pad[1]), shape[1]), axis=1)
    wide = tf.raw_ops.ScaleAndTranslate(
        images=tf.cast(padded, tf.float32)[None], size=[side, side], scale=scale,
        translation=margin - tf.cast(pad, tf.float32) * scale, kernel_type="triangle", antialias=True)[0]
    wide = tf.cast(tf.clip_by_value(tf.round(wide), 0, 255), tf.uint8)
    middle = tf.concat([wide[margin:margin + size, :margin], exact, wide[margin:margin + size, margin + size:]],
                       axis=1)
    return tf.concat([wide[:margin], middle, wide[margin + size:]], axis=0)


def _reflect(indices, n):
    """Indices folded into [0, n) by mirror reflection without repeating the edge (numpy's 'reflect'), any reach."""
    period = tf.maximum(2 * (n - 1), 1)
    folded = tf.math.floormod(indices, period)
    return tf.where(folded >= n, period - folded, folded)


def center(views, margin: int):
    """The central crop of a batch of views (n, size + 2 margin, ..., 1): what validation and prediction see."""
    if margin == 0:
        return views
    return views[:, margin:views.shape[1] - margin, margin:views.shape[2] - margin]


def make_augment(size: int, margin: int, augmentations: Sequence[str], strength: float = 1.0):
    """The batch transformation: (views, labels, seed) -> (uint8 (b, size, size, 1) images, labels).

    One piece: every draw comes from one stateless seed split in a fixed order, so a batch is reproduced exactly
    from (seed, epoch, step); taking the draws apart would make that order harder to see.

    Args:
        size: The crop's side.
        margin: The views' margin; at least `margin(size, augmentations, strength)`.
        augmentations: Names from octtl.data.augment_numpy.AUGMENTATIONS (order does not matter).
        strength: --augment_strength.

    Returns:
        A function of uint8 views (b, size + 2 margin, size + 2 margin, 1), labels and an int64 (2,) seed
        for tf.random's stateless ops; the same seed gives the same batch.
    """
    s = check_views(size, margin, augmentations, strength)
    r = ranges(s)
    side = size + 2 * margin
    shift = max_shift(size, s) if "shift" in augmentations else 0
    on = set(augmentations)

    def augment(views, labels, seed):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
        batch = tf.shape(views)[0]
        if on & set(GEOMETRIC):
            zoom = tf.ones([batch])
            if "scale" in on:
                zoom = tf.random.stateless_uniform([batch], seeds[_ZOOM], *r["zoom"])
            offset = tf.zeros([batch, 2])
            if shift:
                offset = tf.cast(tf.random.stateless_uniform([batch, 2], seeds[_SHIFT], -shift, shift + 1,
                                                             dtype=tf.int32), tf.float32)
            # Output pixel i samples the view at centre + offset + (i - (size - 1) / 2) / zoom, so zoom 1 and
            # no offset sample the central window's pixels exactly.
            half = (size - 1) / (2 * zoom)
            centre = (side - 1) / 2 + offset
            boxes = tf.stack([centre[:, 0] - half, centre[:, 1] - half, centre[:, 0] + half, centre[:, 1] + half],
                             axis=1) / (side - 1)
            images = tf.image.crop_and_resize(views, tf.clip_by_value(boxes, 0.0, 1.0), tf.range(batch),
                                              (size, size))
        else:
            images = tf.cast(center(views, margin), tf.float32)
        if "flip" in on:
            flip = tf.random.stateless_uniform([batch], seeds[_FLIP]) < r["flip_probability"]
            images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
        if "intensity" in on:
            draws = tf.random.stateless_uniform([batch, 2], seeds[_INTENSITY])
            gain = r["gain"][0] + (r["gain"][1] - r["gain"][0]) * draws[:, 0]
            gamma = GAMMA ** (s * (2 * draws[:, 1] - 1))
            images = 255 * tf.clip_by_value(
                gain[:, None, None, None] * (images / 255) ** gamma[:, None, None, None], 0.0, 1.0)
        if "speckle" in on:
            images = images * (1 + tf.random.stateless_normal(tf.shape(images), seeds[_SPECKLE],
                                                              stddev=r["speckle_std"]))
        return tf.cast(tf.round(tf.clip_by_value(images, 0.0, 255.0)), tf.uint8), labels

    return augment


def training_batches(views: np.ndarray, labels: np.ndarray, indices: Sequence[int], batch_size: int, seed: int,
                     size: int, margin: int = 0, augmentations: Sequence[str] = (),
                     strength: float = 1.0) -> tf.data.Dataset:
    """octtl.data.pipeline.training_batches over views, augmented: (uint8 (b, size, size, 1) images, labels) batches.

    The shuffle and batching are pipeline.training_batches' (seeded, reshuffled every epoch, last partial batch
    dropped), so the same examples come in the same order; without augmentations and margin 0 the batches are
    pipeline.training_batches' byte for byte.

    Args:
        views: uint8 (n, size + 2 margin, size + 2 margin, 1), from `view`; never modified.
        labels: (n,) labels.
        seed: The run's seed; it seeds the shuffle and the augmentations.
    """
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ValueError("no examples selected")
    augment = make_augment(size, margin, augmentations, strength)
    ds = tf.data.Dataset.from_tensor_slices((views[indices], labels[indices]))
    ds = ds.shuffle(len(indices), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=True)
    if augmentations or margin:
        # One (2,) stateless seed per batch, a new stream every epoch, the same for the same run seed.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda batch, batch_seed: augment(*batch, batch_seed),
                                                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
