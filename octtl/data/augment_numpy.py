"""octtl.data.augment's augmentations in numpy: the same transformations, ranges and views, without TensorFlow.

For backends other than TensorFlow (issue #26), where batches are made on the host. Every transformation does
what octtl.data.augment does for the same drawn parameters (`Draws`), in the same order (zoom and shift as one
bilinear crop, flip, intensity, speckle; rounded to uint8 once), and the views with a margin are the same pixels
(`view`, built on octtl.data.images). The random stream is numpy's, not TensorFlow's: a batch's draws come from
a numpy Generator seeded with (run seed, epoch, step) and the transformation's slot, so a batch is reproduced
exactly from those three numbers and switching one transformation on does not change what another draws.

The transformations' names, ranges and margins are owned here, and octtl.data.augment (their TensorFlow form,
which the tf.data pipeline maps) imports them; its docstring says how each range is used. `epoch_order` is the
shuffle of the batches that off-TensorFlow training feeds Keras (octtl.training.fitting): numpy's from (seed,
epoch), where TensorFlow's backend keeps tf.data's shuffle.
"""

import dataclasses
import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from octtl.data import images as images_lib
from octtl.errors import InputError

AUGMENTATIONS = ("flip", "shift", "scale", "intensity", "speckle")
GEOMETRIC = ("shift", "scale")
MAX_STRENGTH = 5.0  # exclusive: at 5 the gain's range starts at 0 (black B-scans)
FLIP_PROBABILITY = 0.5
SHIFT_FRACTION = 0.1
ZOOM = 0.1
GAIN = 0.2
GAMMA = 1.25
SPECKLE_STD = 0.1
# Which stream of a batch each transformation draws from (octtl.data.augment's slots).
_ZOOM, _SHIFT, _FLIP, _INTENSITY, _SPECKLE = range(5)


def parse(text: str) -> Tuple[str, ...]:
    """--augment's comma list as a tuple in AUGMENTATIONS order; "" and "none" are no augmentation.

    Raises:
        InputError: An unknown name (one line naming --augment).
    """
    names = [name.strip() for name in (text or "").split(",") if name.strip()]
    if names == ["none"]:
        return ()
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise InputError(f"--augment={text}: unknown augmentation {unknown[0]!r}; choose a comma list of "
                         f"{', '.join(AUGMENTATIONS)}, or none")
    return tuple(name for name in AUGMENTATIONS if name in names)


def check_strength(strength: float) -> float:
    """--augment_strength as a float, refused in one line unless 0 < strength < 5."""
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    if not 0 < value < MAX_STRENGTH:
        raise InputError(f"--augment_strength={strength}: must be > 0 and < {MAX_STRENGTH:g} (it scales every "
                         "range; at 5 the gain would reach 0)")
    return value


def ranges(strength: float = 1.0) -> dict:
    """The ranges every augmentation draws from at `strength`, as octtl.data.augment.ranges."""
    s = check_strength(strength)
    return {"flip_probability": FLIP_PROBABILITY,
            "shift_fraction": SHIFT_FRACTION * s,
            "zoom": (1 - ZOOM * s, 1 + ZOOM * s),
            "gain": (1 - GAIN * s, 1 + GAIN * s),
            "gamma": (GAMMA ** -s, GAMMA ** s),
            "speckle_std": SPECKLE_STD * s}


def max_shift(size: int, strength: float) -> int:
    """The largest shift in whole pixels along each axis: floor(0.1 s size)."""
    return int(math.floor(SHIFT_FRACTION * check_strength(strength) * size + 1e-9))


def margin(size: int, augmentations: Sequence[str], strength: float = 1.0) -> int:
    """Pixels a view needs beyond the crop on each side so every shifted or zoomed window fits (augment.margin)."""
    return _required_margin(size, augmentations, check_strength(strength))


def _required_margin(size: int, augmentations: Sequence[str], s: float) -> int:
    if not set(GEOMETRIC) & set(augmentations):
        return 0
    shift = max_shift(size, s) if "shift" in augmentations else 0
    zoom = 0
    if "scale" in augmentations:
        zoom = math.ceil(((size - 1) / (1 - ZOOM * s) - (size - 1)) / 2 - 1e-9)
    return shift + zoom + 1


def _reflect(indices: np.ndarray, n: int) -> np.ndarray:
    """Indices folded into [0, n) by mirror reflection without repeating the edge, any reach."""
    period = max(2 * (n - 1), 1)
    folded = np.mod(indices, period)
    return np.where(folded >= n, period - folded, folded)


def view(image: np.ndarray, size: int, margin: int, crop_mode: str = "center") -> np.ndarray:
    """octtl.data.augment.view in numpy: a (size + 2 margin)^2 uint8 view whose centre is the crop, same pixels.

    'center': the B-scan (zero-padded to the crop first if smaller) continued by mirror reflection. 'resize': the
    same resize continued over the B-scan's reflection, its centre replaced by the exact resize.
    """
    if crop_mode not in images_lib.CROPS:
        raise ValueError(f"crop mode must be one of {images_lib.CROPS}, got {crop_mode!r}")
    image = np.asarray(image)
    if margin == 0:
        return images_lib.crop(image, size, crop_mode)
    side = size + 2 * margin
    if crop_mode == "center":
        padded = images_lib.crop_or_pad(image, max(image.shape[0], size), max(image.shape[1], size))
        rows, cols = padded.shape[:2]
        out = padded[_reflect(np.arange(side) + (rows - size) // 2 - margin, rows)]
        return out[:, _reflect(np.arange(side) + (cols - size) // 2 - margin, cols)]
    exact = images_lib.crop(image, size, "resize")
    shape = np.array(image.shape[:2])
    scale = np.float32(size) / shape.astype(np.float32)  # as tf.image.resize computes it
    pad = np.ceil(np.float32(margin + 2) / scale).astype(np.int32) + 1  # the margin and the kernel's reach
    padded = image[_reflect(np.arange(-pad[0], shape[0] + pad[0]), shape[0])]
    padded = padded[:, _reflect(np.arange(-pad[1], shape[1] + pad[1]), shape[1])]
    translation = np.float32(margin) - pad.astype(np.float32) * scale
    wide = images_lib.to_uint8(images_lib.scale_and_translate(padded, (side, side), scale, translation))
    wide[margin:margin + size, margin:margin + size] = exact
    return wide


def center(views: np.ndarray, margin: int) -> np.ndarray:
    """The central crop of a batch of views (n, size + 2 margin, ..., 1): what validation and prediction see."""
    if margin == 0:
        return views
    return views[:, margin:views.shape[1] - margin, margin:views.shape[2] - margin]


@dataclasses.dataclass(frozen=True)
class Draws:
    """One batch's parameters, one row per image; None where the transformation is off.

    Attributes:
        zoom: float32 (b,): the window shows size / zoom view pixels (z > 1 enlarges).
        offset: int (b, 2): the window's shift in view pixels along rows and columns.
        flip: bool (b,): mirror left-right.
        gain, gamma: float32 (b,): y = gain * x^gamma on [0, 1].
        noise: float32 (b, size, size, 1): speckle, y = x (1 + noise).
    """

    zoom: Optional[np.ndarray] = None
    offset: Optional[np.ndarray] = None
    flip: Optional[np.ndarray] = None
    gain: Optional[np.ndarray] = None
    gamma: Optional[np.ndarray] = None
    noise: Optional[np.ndarray] = None


def streams(seed: Sequence[int]) -> list:
    """The five numpy Generators of one batch (one per transformation slot) from (run seed, epoch, step)."""
    words = [int(v) & 0xFFFFFFFFFFFFFFFF for v in seed]  # SeedSequence takes non-negative words; seeds may be < 0
    return [np.random.default_rng(words + [slot]) for slot in range(5)]


def draw(batch: int, size: int, augmentations: Sequence[str], strength: float, seed: Sequence[int]) -> Draws:
    """A batch's parameters from (run seed, epoch, step), each transformation from its own stream."""
    s = check_strength(strength)
    r = ranges(s)
    rng = streams(seed)
    on = set(augmentations)
    shift = max_shift(size, s) if "shift" in on else 0
    zoom = rng[_ZOOM].uniform(*r["zoom"], batch).astype(np.float32) if "scale" in on else None
    offset = rng[_SHIFT].integers(-shift, shift + 1, (batch, 2)) if shift else None
    flip = rng[_FLIP].random(batch) < r["flip_probability"] if "flip" in on else None
    gain = gamma = None
    if "intensity" in on:
        u = rng[_INTENSITY].random((batch, 2))
        gain = (r["gain"][0] + (r["gain"][1] - r["gain"][0]) * u[:, 0]).astype(np.float32)
        gamma = (GAMMA ** (s * (2 * u[:, 1] - 1))).astype(np.float32)
    noise = None
    if "speckle" in on:
        noise = (rng[_SPECKLE].standard_normal((batch, size, size, 1), np.float32)
                 * np.float32(r["speckle_std"])).astype(np.float32)
    return Draws(zoom=zoom, offset=offset, flip=flip, gain=gain, gamma=gamma, noise=noise)


def crop_and_resize(views: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """tf.image.crop_and_resize (bilinear, 0 outside) of each view's box into size x size, in float32.

    Args:
        views: (b, rows, cols, channels).
        boxes: float32 (b, 4): y1, x1, y2, x2 in [0, 1] of the view's (rows - 1, cols - 1).
    """
    f32 = np.float32
    b, rows, cols = views.shape[:3]
    boxes = boxes.astype(f32)
    steps = np.arange(size, dtype=f32)

    def axis(lo, hi, n):
        scale = (hi - lo) * f32(n - 1) / f32(size - 1) if size > 1 else np.zeros_like(lo)
        at = (lo * f32(n - 1))[:, None] + steps[None, :] * scale[:, None] if size > 1 else \
            np.repeat((f32(0.5) * (lo + hi) * f32(n - 1))[:, None], size, axis=1)
        at = at.astype(f32)
        inside = (at >= 0) & (at <= f32(n - 1))
        low = np.clip(np.floor(at), 0, n - 1).astype(np.intp)
        high = np.clip(np.ceil(at), 0, n - 1).astype(np.intp)
        return low, high, (at - np.floor(at)).astype(f32), inside

    top, bottom, y_lerp, y_in = axis(boxes[:, 0], boxes[:, 2], rows)
    left, right, x_lerp, x_in = axis(boxes[:, 1], boxes[:, 3], cols)
    n = np.arange(b)[:, None, None]
    x = views.astype(f32)

    def at(r, c):
        return x[n, r[:, :, None], c[:, None, :]]

    y_lerp, x_lerp = y_lerp[:, :, None, None], x_lerp[:, None, :, None]
    upper = at(top, left) + (at(top, right) - at(top, left)) * x_lerp
    lower = at(bottom, left) + (at(bottom, right) - at(bottom, left)) * x_lerp
    out = upper + (lower - upper) * y_lerp
    return np.where((y_in[:, :, None] & x_in[:, None, :])[..., None], out, f32(0.0)).astype(f32)


def apply(views: np.ndarray, draws: Draws, size: int, margin: int) -> np.ndarray:
    """The batch transformed by `draws`, as octtl.data.augment's batch function does: uint8 (b, size, size, 1)."""
    f32 = np.float32
    batch, side = views.shape[0], views.shape[1]
    if draws.zoom is not None or draws.offset is not None:
        zoom = draws.zoom if draws.zoom is not None else np.ones(batch, f32)
        offset = draws.offset.astype(f32) if draws.offset is not None else np.zeros((batch, 2), f32)
        # Output pixel i samples the view at centre + offset + (i - (size - 1) / 2) / zoom (float32 throughout).
        half = f32(size - 1) / (f32(2) * zoom.astype(f32))
        centre = f32((side - 1) / 2) + offset
        boxes = np.stack([centre[:, 0] - half, centre[:, 1] - half, centre[:, 0] + half, centre[:, 1] + half],
                         axis=1) / f32(side - 1)
        images = crop_and_resize(views, np.clip(boxes, f32(0), f32(1)), size)
    else:
        images = center(views, margin).astype(f32)
    if draws.flip is not None:
        images = np.where(draws.flip[:, None, None, None], images[:, :, ::-1], images)
    if draws.gain is not None:
        gain, gamma = draws.gain.astype(f32)[:, None, None, None], draws.gamma.astype(f32)[:, None, None, None]
        images = f32(255) * np.clip(gain * (images / f32(255)) ** gamma, f32(0), f32(1))
    if draws.noise is not None:
        images = images * (f32(1) + draws.noise)
    return np.round(np.clip(images, f32(0), f32(255))).astype(np.uint8)


def check_views(size: int, margin: int, augmentations: Sequence[str], strength: float) -> float:
    """The strength, checked, once the augmentations are known and the views' margin is wide enough for them
    (ValueError otherwise): what both forms of the transformation (this one, octtl.data.augment's) need."""
    s = check_strength(strength)
    unknown = set(augmentations) - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"unknown augmentations {sorted(unknown)}; choose from {AUGMENTATIONS}")
    needed = _required_margin(size, augmentations, s)
    if margin < needed:
        raise ValueError(f"views with margin {margin} are too small for {', '.join(augmentations)} at strength "
                         f"{s:g} (margin {needed} needed)")
    return s


def make_augment(size: int, margin: int, augmentations: Sequence[str], strength: float = 1.0):
    """The batch transformation: (views, labels, (run seed, epoch, step)) -> (uint8 (b, size, size, 1), labels).

    The same seed triple gives the same batch. Raises ValueError for unknown names or too small a margin.
    """
    s = check_views(size, margin, augmentations, strength)

    def augment(views, labels, seed):
        views = np.asarray(views)
        return apply(views, draw(len(views), size, augmentations, s, seed), size, margin), labels

    return augment


def epoch_batches(views: np.ndarray, labels: np.ndarray, indices: Sequence[int], batch_size: int, seed: int,
                  epoch: int, size: int, margin: int = 0, augmentations: Sequence[str] = (),
                  strength: float = 1.0) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """One epoch of (uint8 (b, size, size, 1) images, labels) batches of the examples at `indices`.

    Shuffled by numpy from (seed, epoch) (not tf.data's order), the last partial batch dropped as in
    octtl.data.pipeline.training_batches; batch k is augmented from (seed, epoch, k).
    """
    augment = make_augment(size, margin, augmentations, strength)
    order = epoch_order(indices, seed, epoch)
    for step in range(len(order) // batch_size):
        chosen = order[step * batch_size:(step + 1) * batch_size]
        if augmentations or margin:
            yield augment(views[chosen], labels[chosen], (seed, epoch, step))
        else:
            yield views[chosen], labels[chosen]


def epoch_order(indices: Sequence[int], seed: int, epoch: int) -> np.ndarray:
    """The examples at `indices` (each once) in the order epoch `epoch` of a run seeded `seed` visits them."""
    indices = np.unique(np.asarray(indices, dtype=np.int64))
    if indices.size == 0:
        raise ValueError("no examples selected")
    return np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch), 1 << 32]).permutation(indices)
