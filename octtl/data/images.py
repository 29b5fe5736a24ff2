"""B-scan decoding, centre crop and resize in numpy and Pillow, equal to TensorFlow's ops without TensorFlow.

What octtl.data.pipeline.crop and octtl.data.records.decode_image do with TensorFlow, done so that a run on the
JAX or PyTorch backend feeds its network the same uint8 pixels:
  * `decode_png`: PNG bytes to (rows, columns, 1) uint8, as tf.io.decode_png(channels=1).
  * `crop_or_pad`: the centre crop, zero-padded where the B-scan is smaller, as tf.image.resize_with_crop_or_pad.
  * `scale_and_translate` / `resize`: TensorFlow's ScaleAndTranslate with the triangle kernel and antialiasing
    (what tf.image.resize(..., antialias=True) runs for bilinear), separable: rows first, then columns, with
    half-pixel centres. The weights are computed in float32 in the kernel's own order of operations and each
    output pixel is accumulated in float32 in TensorFlow's order, so the floats agree with TensorFlow's.
  * `crop`: pipeline.crop's two modes ('center', 'resize') on a uint8 B-scan.

The weights of a resize depend only on the input and output shapes (and scale and translation), so they are
computed once per shape (`_spans`, cached) and a stack of same-shaped B-scans is resized in one pass.
"""

import functools
import io
from typing import Tuple

import numpy as np

CROPS = ("center", "resize")


def decode_png(png: bytes) -> np.ndarray:
    """PNG bytes to a (rows, columns, 1) uint8 array, as tf.io.decode_png(png, channels=1, dtype=tf.uint8).

    Gray 8-bit PNGs (what octtl.data.converter writes) decode to their bytes as they are. 16-bit gray keeps the
    high byte, as libpng's strip-16 does in TensorFlow; colour is converted to gray with TensorFlow's weights
    (`_gray`).
    """
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        if image.format != "PNG":
            raise ValueError(f"not a PNG image (Pillow reads it as {image.format})")
        mode = image.mode
        if mode in _PIL_TARGET:
            image = image.convert(_PIL_TARGET[mode])
        array = np.asarray(image)
    if mode.startswith("I"):  # 16-bit gray
        array = (array >> 8).astype(np.uint8)
    elif array.ndim == 3:
        array = _gray(array[..., :3])
    return array[..., None]


_PIL_TARGET = {"1": "L", "P": "RGB", "LA": "L", "PA": "RGB", "RGBA": "RGB"}


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Colour to gray as TensorFlow asks libpng: png_set_rgb_to_gray(0.299, 0.587), truncated fixed point.

    libpng turns the weights into 1/32768ths (9797 R, 19234 G and the rest, 3737, B) and truncates the sum;
    a pixel with R = G = B keeps its value (the sum is the same).
    """
    r, g, b = (rgb[..., k].astype(np.uint32) for k in range(3))
    return ((9797 * r + 19234 * g + 3737 * b) >> 15).astype(np.uint8)


def crop_or_pad(image: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """The centre (rows, columns) window of (h, w, c) `image`, zero-padded where it is smaller.

    As tf.image.resize_with_crop_or_pad: along each axis an image larger than the target loses
    floor((size - target) / 2) pixels before the window; a smaller one gets floor((target - size) / 2) zeros
    before it.
    """
    image = np.asarray(image)
    out = np.zeros((rows, columns) + image.shape[2:], image.dtype)
    src, dst = [], []
    for size, target in ((image.shape[0], rows), (image.shape[1], columns)):
        diff = target - size
        crop_offset, pad_offset = max(-diff // 2, 0), max(diff // 2, 0)
        length = min(size, target)
        src.append(slice(crop_offset, crop_offset + length))
        dst.append(slice(pad_offset, pad_offset + length))
    out[dst[0], dst[1]] = image[src[0], src[1]]
    return out


@functools.lru_cache(maxsize=64)
def _spans(output_size: int, input_size: int, scale: float, translate: float) -> Tuple[np.ndarray, np.ndarray]:
    """Start index (output_size,) and weights (output_size, span) of the antialiased triangle kernel.

    TensorFlow's ComputeSpansCore (scale_and_translate_op.cc) step by step in float32: the sample position of
    output pixel x is (x + 0.5) / scale - translate / scale, the kernel is stretched by 1 / scale when shrinking,
    each span's weights are normalised by their float32 sum taken in order. Samples outside the input have no
    weights (the output is 0 there).
    """
    f32 = np.float32
    scale = f32(scale)
    inv_scale = f32(1.0 / np.float64(scale))  # 1.0 / scale in double, stored as float
    inv_translate = f32(-inv_scale * f32(translate))
    kernel_scale = max(inv_scale, f32(1.0))
    span = min(2 * int(np.ceil(kernel_scale)) + 1, input_size)
    one_over_kernel_scale = f32(1.0) / kernel_scale
    x = np.arange(output_size)
    sample = (x.astype(f32) + f32(0.5)) * inv_scale + inv_translate
    inside = (sample >= 0) & (sample <= f32(input_size))
    start = np.ceil(sample - kernel_scale - f32(0.5)).astype(np.int64)
    end = np.floor(sample + kernel_scale - f32(0.5)).astype(np.int64)
    start = np.clip(start, 0, input_size - 1)
    end = np.clip(end, 0, input_size - 1) + 1
    sources = start[:, None] + np.arange(span)[None, :]
    valid = sources < end[:, None]
    position = (sources.astype(f32) + f32(0.5)) - sample[:, None]
    weight = np.abs(position * one_over_kernel_scale)
    weight = np.where(weight < f32(1.0), f32(1.0) - weight, f32(0.0)).astype(f32)
    weight[~valid] = 0
    total = np.zeros(output_size, f32)
    for k in range(span):  # the sum in the kernel's order
        total = total + weight[:, k]
    usable = inside & (np.abs(total) >= f32(1000.0) * np.finfo(f32).tiny)
    inverse = np.where(usable, f32(1.0) / np.where(usable, total, f32(1.0)), f32(0.0)).astype(f32)
    weight = (weight * inverse[:, None]).astype(f32)
    start[~inside] = 0
    # Sources past the input's end carry weight 0 (TensorFlow stops its loop at the last row); clamp their index.
    return start, weight


def _gather(x: np.ndarray, axis: int, start: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted sums along `axis` of float32 `x`, accumulated one source at a time as TensorFlow's GatherSpans."""
    n = x.shape[axis]
    out = None
    for k in range(weight.shape[1]):
        index = np.minimum(start + k, n - 1)
        term = np.take(x, index, axis=axis)
        shape = [1] * x.ndim
        shape[axis] = len(start)
        term = term * weight[:, k].reshape(shape)
        out = term if out is None else out + term
    return out


def scale_and_translate(images: np.ndarray, size: Tuple[int, int], scale: Tuple[float, float],
                        translation: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """tf.raw_ops.ScaleAndTranslate(kernel_type='triangle', antialias=True) on (..., rows, cols, channels).

    Args:
        images: Any real dtype, (rows, columns, channels) or a stack (n, rows, columns, channels).
        size: Output (rows, columns).
        scale: Output pixels per input pixel along rows and columns (float32, as TensorFlow takes them).
        translation: Output offset in output pixels along rows and columns.

    Returns:
        float32 (..., size[0], size[1], channels).
    """
    images = np.asarray(images)
    if images.ndim == 4:  # one B-scan at a time: a stack's float32 intermediates would not fit in cache
        return np.stack([scale_and_translate(image, size, scale, translation) for image in images])
    if images.ndim != 3:
        raise ValueError(f"expected (rows, columns, channels) or a stack of them, got shape {images.shape}")
    rows = _spans(int(size[0]), images.shape[0], float(np.float32(scale[0])), float(np.float32(translation[0])))
    cols = _spans(int(size[1]), images.shape[1], float(np.float32(scale[1])), float(np.float32(translation[1])))
    # Rows first (GatherRows into an intermediate of output rows x input columns), then columns.
    intermediate = _gather(images.astype(np.float32), 0, *rows)
    return _gather(intermediate, 1, *cols)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """tf.image.resize(images, (size, size), antialias=True) (bilinear): float32 (..., size, size, channels)."""
    x = np.asarray(images)
    rows, cols = x.shape[-3], x.shape[-2]
    # tf.image.resize: scale = float32(new size) / float32(old size).
    scale = (np.float32(size) / np.float32(rows), np.float32(size) / np.float32(cols))
    return scale_and_translate(x, (size, size), scale)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Rounded half to even (tf.round), clipped to 0..255, as uint8: how pipeline.crop stores a resize."""
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def crop(image: np.ndarray, image_size: int, mode: str = "center") -> np.ndarray:
    """pipeline.crop without TensorFlow: a (size, size, 1) uint8 view of a uint8 (rows, cols, 1) B-scan.

    'center' is the centre crop (zero-padded if smaller): the paper's choice, native pixel scale. 'resize' is the
    whole B-scan resized to size x size (antialiased bilinear, rounded to uint8). Also takes a stack (n, rows,
    cols, 1) of same-shaped B-scans.
    """
    image = np.asarray(image)
    if mode == "center":
        if image.ndim == 4:
            return np.stack([crop_or_pad(one, image_size, image_size) for one in image])
        return crop_or_pad(image, image_size, image_size)
    if mode == "resize":
        return to_uint8(resize(image, image_size))
    raise ValueError(f"crop mode must be one of {CROPS}, got {mode!r}")


def rescale(images: np.ndarray, mode: str = "paper") -> np.ndarray:
    """pipeline.rescale without TensorFlow, as float32: 'paper' maps uint8 to [-1, 1] (x / 127.5 - 1, in float32
    as TensorFlow computes it), 'none' leaves 0..255 for a model that scales its inputs itself."""
    x = np.asarray(images).astype(np.float32)
    if mode == "paper":
        return x / np.float32(127.5) - np.float32(1.0)
    if mode == "none":
        return x
    raise ValueError(f"rescale mode must be one of ('paper', 'none'), got {mode!r}")
