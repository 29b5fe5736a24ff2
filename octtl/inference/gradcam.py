"""Grad-CAM heatmaps of the fluid decision, their place on the B-scan, and the pointing game.

Grad-CAM (Selvaraju et al., 2017) weights the feature maps of a network's last convolutional block by the
spatially averaged gradient of the class score and keeps the positive part. Here the score is the fluid
log-odds, logit(fluid) - logit(normal): a two-class softmax depends only on that difference, so it is the
quantity the decision is made on.

Every octtl model is one flat functional Keras model (keras.applications backbones are built on the model's
own input tensor, so their layers are inlined rather than nested), which lets `target_layer` find the last
block the same way for all ten networks: walk back from the head to the first 4-D tensor, then back over
dropout and pooling, which add no evidence of their own (VGG's and AlexNet's last convolution sits before a
max pool, as in the Grad-CAM paper).

Coordinates. A heatmap is a grid of cells, one per position of that block's feature map (e.g. 5 x 5 for
SqueezeNet at 96 px). Cell (i, j) of an n x m grid stands for crop rows [floor(i S / n), floor((i + 1) S / n))
and the matching columns of the S x S crop, the pixels bilinear upsampling centres on it; `cell_box` maps that
block back to the B-scan exactly as `octtl.data.pipeline.crop` cut the crop out: a centre crop shifts it by the crop
offset (tf.image.resize_with_crop_or_pad's (H - S) // 2), a resize scales it by H / S (and W / S), widened to
whole B-scan pixels. Upsampled heatmaps (`upsample`, `to_bscan`) are for display only.

Pointing game (Zhang et al., 2018), on the grid the heatmap really has: a fluid B-scan is a hit when the B-scan
box of the heatmap's maximum cell holds a reference fluid voxel. Taking the maximum of an upsampled map instead
would claim a precision finer than one cell (16-32 px) that Grad-CAM does not have. A heatmap whose maximum is
a uniformly random cell hits with probability `cell_hits(...).mean()`, the random baseline.
"""

from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from octtl.nets import loading, models

# Identity at inference (dropout) or a summary of the block they follow (pooling): skipped to reach the block.
_PASS_THROUGH = (keras.layers.Dropout, keras.layers.MaxPooling2D, keras.layers.AveragePooling2D,
                 keras.layers.AdaptiveAveragePooling2D, keras.layers.AdaptiveMaxPooling2D)


def target_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer whose output Grad-CAM weights: the last convolutional block before the head.

    Raises:
        ValueError: `model` has no octtl head or no 4-D feature map before it.
    """
    names = {layer.name for layer in model.layers}
    if models.HEAD not in names or models.HEAD_SOFTMAX not in names:
        raise ValueError(f"{model.name}: no {models.HEAD!r}/{models.HEAD_SOFTMAX!r} layers; not an octtl model")
    producer = {id(layer.output): layer for layer in model.layers}
    tensor = model.get_layer(models.HEAD).input
    layer = producer.get(id(tensor))
    while layer is not None and len(tensor.shape) != 4:
        if isinstance(layer.input, (list, tuple)):
            break  # A merge before any 4-D map: not a chain this rule can follow.
        tensor = layer.input
        layer = producer.get(id(tensor))
    while layer is not None and isinstance(layer, _PASS_THROUGH):
        tensor = layer.input
        layer = producer.get(id(tensor))
    if layer is None or isinstance(layer, keras.layers.InputLayer) or len(tensor.shape) != 4:
        raise ValueError(f"{model.name}: no convolutional feature map before the head")
    return layer


class GradCam:
    """Computes fluid Grad-CAM heatmaps of an octtl model on batches of model inputs.

    Attributes:
      layer: the block whose feature maps are weighted (`target_layer`).
      grid: (rows, cols) of the heatmaps, that block's feature map size.
    """

    def __init__(self, model: keras.Model, layer: Optional[str] = None):
        """`layer` names another 4-D block to weight than `target_layer`'s (benchmarks/gradcam.py compares them).

        Either spelling of a name finds the block (`fire8_concat`, or `fire8.concat` as octtl named it until issue
        #26, which a best.keras saved then still carries): octtl.nets.loading.get_layer.
        """
        self.layer = target_layer(model) if layer is None else loading.get_layer(model, layer)
        logits = model.get_layer(models.HEAD_SOFTMAX).input
        self.grid = tuple(int(v) for v in self.layer.output.shape[1:3])
        self._model = keras.Model(model.input, [self.layer.output, logits])
        self._heatmaps = tf.function(self._compute, reduce_retracing=True)

    def _compute(self, images):
        with tf.GradientTape() as tape:
            features, logits = self._model(images, training=False)
            logits = tf.cast(logits, tf.float32)
            score = logits[:, 1] - logits[:, 0]
        # Differentiate with respect to the block's own output; cast after (float16 under mixed precision).
        gradients = tf.cast(tape.gradient(score, features), tf.float32)
        features = tf.cast(features, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))
        peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
        return tf.math.divide_no_nan(cam, peak)

    def __call__(self, images) -> np.ndarray:
        """(n, grid rows, grid cols) heatmaps in [0, 1] (all 0 where nothing speaks for fluid) of model inputs."""
        if len(images) == 0:
            return np.zeros((0, *self.grid), np.float32)  # oneDNN convolutions reject empty batches.
        return self._heatmaps(tf.cast(images, tf.float32)).numpy()


def _axis_to_bscan(length: int, size: int, crop: str) -> np.ndarray:
    """B-scan index under each of the `size` crop positions along one axis; -1 where the crop is padding."""
    positions = np.arange(size)
    if crop == "center":
        index = positions + _shift(length, size)
    elif crop == "resize":
        index = np.floor((positions + 0.5) * length / size).astype(np.int64)
    else:
        raise ValueError(f"crop must be 'center' or 'resize', got {crop!r}")
    return np.where((index >= 0) & (index < length), index, -1)


def _shift(length: int, size: int) -> int:
    """B-scan index of crop position 0 in a centre crop, as tf.image.resize_with_crop_or_pad places it."""
    return (length - size) // 2 if length >= size else -((size - length) // 2)


def cell_edges(cells: int, size: int) -> np.ndarray:
    """Crop-pixel boundaries of `cells` equal cells along a side of `size` pixels (bilinear upsampling's)."""
    return np.floor(np.arange(cells + 1) * size / cells).astype(np.int64)


def _span_to_bscan(start: int, stop: int, length: int, size: int, crop: str):
    """B-scan pixels [lo, hi) under crop pixels [start, stop) along one axis; None when all padding."""
    if crop == "center":
        lo, hi = start + _shift(length, size), stop + _shift(length, size)
    elif crop == "resize":
        lo, hi = int(np.floor(start * length / size)), int(np.ceil(stop * length / size))
    else:
        raise ValueError(f"crop must be 'center' or 'resize', got {crop!r}")
    lo, hi = max(lo, 0), min(hi, length)
    return (lo, hi) if lo < hi else None


def cell_box(cell, grid, size: int, shape, crop: str):
    """The B-scan pixels a heatmap cell stands for, as (top, bottom, left, right), bottom/right exclusive.

    Args:
      cell: (row, col) on the heatmap grid.
      grid: (rows, cols) of the heatmap grid.
      size: side of the crop.
      shape: (rows, cols) of the B-scan.
      crop: 'center' or 'resize', how octtl.data.pipeline.crop made the crop.

    Returns:
      The box, or None for a cell that lies entirely on a centre crop's zero padding.
    """
    rows, cols = cell_edges(grid[0], size), cell_edges(grid[1], size)
    r = _span_to_bscan(rows[cell[0]], rows[cell[0] + 1], shape[0], size, crop)
    c = _span_to_bscan(cols[cell[1]], cols[cell[1] + 1], shape[1], size, crop)
    return None if r is None or c is None else (r[0], r[1], c[0], c[1])


def crop_box(shape, size: int, crop: str):
    """The B-scan pixels the network sees, (top, bottom, left, right) exclusive; None when it sees them all.

    A centre crop of a B-scan larger than `size` shows only its middle (where `octtl.data.pipeline.crop` cuts it);
    a resize shows the whole B-scan.
    """
    rows = _span_to_bscan(0, size, shape[0], size, crop)
    cols = _span_to_bscan(0, size, shape[1], size, crop)
    box = (rows[0], rows[1], cols[0], cols[1])
    return None if box == (0, shape[0], 0, shape[1]) else box


def cell_hits(mask: np.ndarray, grid, size: int, crop: str) -> np.ndarray:
    """(grid rows, grid cols) bool: whether each cell's B-scan box holds a fluid pixel of `mask`."""
    hits = np.zeros(tuple(grid), bool)
    for i in range(grid[0]):
        for j in range(grid[1]):
            box = cell_box((i, j), grid, size, mask.shape, crop)
            hits[i, j] = box is not None and bool(mask[box[0]:box[1], box[2]:box[3]].any())
    return hits


def peak_cell(heatmap: np.ndarray):
    """(row, col) of a heatmap grid's maximum (the first in row-major order on ties)."""
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(heatmap)), heatmap.shape))


def pointing_hit(heatmap: np.ndarray, mask: np.ndarray, size: int, crop: str) -> bool:
    """Whether the maximum of a heatmap grid falls on fluid in the B-scan's reference `mask`."""
    return bool(cell_hits(mask, heatmap.shape, size, crop)[peak_cell(heatmap)])


def upsample(heatmaps: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size) bilinear upsampling of (n, rows, cols) heatmap grids onto the crop, for display."""
    if len(heatmaps) == 0:
        return np.zeros((0, size, size), np.float32)
    return tf.image.resize(heatmaps[..., None], (size, size), method="bilinear")[..., 0].numpy()


def to_bscan(heatmap: np.ndarray, shape, crop: str) -> np.ndarray:
    """A crop heatmap laid over a B-scan of `shape`: shifted (centre crop, 0 outside) or resized back."""
    size = heatmap.shape[0]
    if crop == "resize":
        resized = tf.image.resize(heatmap[..., None], tuple(shape), method="bilinear")[..., 0]
        return np.clip(resized.numpy(), 0.0, 1.0)
    rows = _axis_to_bscan(shape[0], size, crop)
    cols = _axis_to_bscan(shape[1], size, crop)
    out = np.zeros(shape, np.float32)
    r, c = np.nonzero(rows >= 0)[0], np.nonzero(cols >= 0)[0]
    out[np.ix_(rows[r], cols[c])] = heatmap[np.ix_(r, c)]
    return out


def overlay(bscan: np.ndarray, heatmap: np.ndarray, box=None, mask=None, crop=None) -> np.ndarray:
    """An RGB uint8 picture of a B-scan under its heatmap: heat shows only where it is, brightest where hottest.

    The colormap is inferno, perceptually ordered from black through red to pale yellow, so the hottest cell is
    also the brightest (jet's maximum is a dark maroon); opacity grows with heat, so cold areas show the B-scan.

    Args:
      bscan: (rows, cols) uint8.
      heatmap: (rows, cols) in [0, 1], as `to_bscan` gives.
      box: (top, bottom, left, right) of the heatmap maximum's cell (`cell_box`), outlined in cyan.
      mask: reference fluid (bool), outlined in green so a reader sees whether the maximum is on it.
      crop: (top, bottom, left, right) of the part of the B-scan the network saw (`crop_box`), outlined in
        magenta on the pixels just outside it: everything from the outline outwards the network never saw.
    """
    from matplotlib import colormaps  # Only overlays need matplotlib.

    gray = np.repeat(bscan.astype(np.float32)[..., None] / 255.0, 3, axis=2)
    colour = colormaps["inferno"](heatmap)[..., :3].astype(np.float32)
    alpha = 0.75 * heatmap[..., None]
    picture = (1.0 - alpha) * gray + alpha * colour
    if mask is not None and mask.any():
        padded = np.pad(mask, 1, mode="edge")
        interior = (padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
        picture[mask & ~interior] = np.array([0.0, 1.0, 0.0], np.float32)
    if crop is not None:
        _outline_outside(picture, crop, np.array([1.0, 0.0, 1.0], np.float32))
    if box is not None:
        top, bottom, left, right = box
        cyan = np.array([0.0, 1.0, 1.0], np.float32)
        picture[top, left:right] = picture[bottom - 1, left:right] = cyan
        picture[top:bottom, left] = picture[top:bottom, right - 1] = cyan
    return np.rint(np.clip(picture, 0.0, 1.0) * 255.0).astype(np.uint8)


def _outline_outside(picture: np.ndarray, box, colour: np.ndarray):
    """Draws the 1-pixel rectangle just outside `box` (top, bottom, left, right) where it lies on `picture`."""
    top, bottom, left, right = box
    rows, cols = picture.shape[:2]
    lo_r, hi_r, lo_c, hi_c = max(top - 1, 0), min(bottom + 1, rows), max(left - 1, 0), min(right + 1, cols)
    for row in (top - 1, bottom):
        if 0 <= row < rows:
            picture[row, lo_c:hi_c] = colour
    for col in (left - 1, right):
        if 0 <= col < cols:
            picture[lo_r:hi_r, col] = colour
