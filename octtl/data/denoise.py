"""Speckle reduction of whole B-scans before cropping (--denoise): median, non-local means or bilateral filtering.

Denoising is part of the input, like the crop: it is applied once to every B-scan when the records are decoded
(training and validation alike), by predict to new scans, and inside an exported model where it can be written
in TensorFlow ops (`tf_denoise`: the median can, exactly; the others cannot, and export refuses).

The filters are OpenCV's (opencv-python-headless). It was chosen over scikit-image for speed: on 496 x 512 uint8
B-scans on two idle cores, OpenCV's non-local means takes about 0.12 s each (about 140 s for the paper's 1176,
twice that or more on busy cores), its bilateral filter 3-6 ms and its median 0.1-8 ms (window 3-7), where
scikit-image's take 0.24-0.48 s, 0.15-0.28 s and 18-35 ms. OpenCV releases the GIL, so a thread pool spreads
B-scans over the cores.

`--denoise_strength` sets each method's main parameter (DEFAULT_STRENGTH when not given):
  median: the side of the square window in pixels, an odd integer 3-15 (default 3). Borders are extended by
      repeating the edge pixel (OpenCV's BORDER_REPLICATE), which `tf_denoise` reproduces exactly.
  nlm: the filter strength h of OpenCV's fastNlMeansDenoising in 8-bit grey levels, 0 < h <= 100 (default 10);
      7 x 7 patches compared within a 21 x 21 search window (OpenCV's defaults).
  bilateral: sigma_color in grey levels, 0 < sigma <= 255 (default 25): differences well above it are kept as
      edges. Fixed spatial part: sigma_space 2 px over a 7 x 7 neighbourhood; borders reflected (BORDER_REFLECT_101).

Imports no TensorFlow (`tf_denoise` imports it when called) and OpenCV only when a filter runs.
"""

import concurrent.futures
import math
import os
import time
from typing import Optional, Sequence, Tuple

import numpy as np

from octtl.errors import InputError

METHODS = ("none", "median", "nlm", "bilateral")
DEFAULT_STRENGTH = {"none": None, "median": 3, "nlm": 10.0, "bilateral": 25.0}
STRENGTH_MEANING = {"median": "window side in pixels, an odd integer from 3 to 15",
                    "nlm": "filter strength h in grey levels, > 0 and <= 100",
                    "bilateral": "sigma_color in grey levels, > 0 and <= 255"}
# The fixed parts of each filter (see the module docstring).
NLM_TEMPLATE_WINDOW = 7
NLM_SEARCH_WINDOW = 21
BILATERAL_DIAMETER = 7
BILATERAL_SIGMA_SPACE = 2.0
# Methods tf_denoise writes in TensorFlow ops, giving exactly `denoise`'s uint8 result.
IN_TENSORFLOW = ("none", "median")


def check(method: str, strength: Optional[float] = None) -> Optional[float]:
    """Refuses, naming --denoise or --denoise_strength, a method or strength that cannot run.

    Returns:
        The strength the method will use: `strength`, or the method's default when None (None for "none").
    """
    if method not in METHODS:
        raise InputError(f"--denoise={method}: unknown method; choose from {', '.join(METHODS)}")
    if method == "none":
        if strength is not None:
            raise InputError(f"--denoise_strength={strength}: has no effect with --denoise=none")
        return None
    if strength is None:
        return DEFAULT_STRENGTH[method]
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    bad = not math.isfinite(value)
    if method == "median":
        bad = bad or value != int(value) or int(value) % 2 == 0 or not 3 <= value <= 15
    elif method == "nlm":
        bad = bad or not 0 < value <= 100
    else:
        bad = bad or not 0 < value <= 255
    if bad:
        raise InputError(f"--denoise_strength={strength}: --denoise={method} needs its "
                         f"{STRENGTH_MEANING[method]}")
    return int(value) if method == "median" else value


def denoise(bscan: np.ndarray, method: str, strength: Optional[float] = None) -> np.ndarray:
    """One B-scan denoised: uint8 of the same shape; "none" returns `bscan` itself.

    Args:
        bscan: uint8 (rows, columns) or (rows, columns, 1), the whole B-scan before cropping.
        method: One of METHODS.
        strength: The method's main parameter (module docstring); None for its default.
    """
    strength = check(method, strength)
    bscan = np.asarray(bscan)
    if bscan.dtype != np.uint8 or not (bscan.ndim == 2 or (bscan.ndim == 3 and bscan.shape[2] == 1)):
        raise ValueError(f"denoise takes uint8 (rows, columns[, 1]) B-scans, got {bscan.dtype} {bscan.shape}")
    if method == "none":
        return bscan
    import cv2  # only a process that denoises pays for loading OpenCV

    image = np.ascontiguousarray(bscan.reshape(bscan.shape[:2]))
    if method == "median":
        out = cv2.medianBlur(image, strength)
    elif method == "nlm":
        out = cv2.fastNlMeansDenoising(image, None, h=strength, templateWindowSize=NLM_TEMPLATE_WINDOW,
                                       searchWindowSize=NLM_SEARCH_WINDOW)
    else:
        out = cv2.bilateralFilter(image, BILATERAL_DIAMETER, strength, BILATERAL_SIGMA_SPACE,
                                  borderType=cv2.BORDER_REFLECT_101)
    return out.reshape(bscan.shape)


def denoise_all(images: Sequence[np.ndarray], method: str, strength: Optional[float] = None,
                workers: Optional[int] = None) -> Tuple[Sequence[np.ndarray], float]:
    """Every B-scan denoised (in order) on a thread pool, and the seconds it took.

    Args:
        images: B-scans as `denoise` takes them; a list (their sizes may differ) or one stacked uint8 array
            (n, rows, columns[, 1]).
        workers: Threads; default: the cores this process may use. OpenCV releases the GIL while it filters.

    Returns:
        (the denoised B-scans, a list or a stacked array as given; for "none" `images` itself, seconds).
    """
    strength = check(method, strength)
    started = time.perf_counter()
    if method == "none":
        return images, time.perf_counter() - started
    workers = workers or len(os.sched_getaffinity(0))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        out = list(pool.map(lambda image: denoise(image, method, strength), images))
    if isinstance(images, np.ndarray):
        out = np.stack(out) if out else images.copy()
    return out, time.perf_counter() - started


def tf_denoise(images, method: str, strength: Optional[float] = None):
    """`denoise` in TensorFlow ops, for an exported model: exactly the same uint8 result, borders included.

    Args:
        images: uint8 tensor (rows, columns), (batch, rows, columns) or (batch, rows, columns, 1); the shape
            may be unknown until run time.

    Returns:
        A uint8 tensor of the same shape.

    Raises:
        InputError: A method that cannot be written in TensorFlow ops (one line naming --denoise).
    """
    strength = check(method, strength)
    if method not in IN_TENSORFLOW:
        raise InputError(f"--denoise={method} cannot be written in TensorFlow ops; export refuses such a model "
                         f"(octtl.predict applies it; of the denoising methods only "
                         f"{' and '.join(IN_TENSORFLOW[1:])} can be exported)")
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        raise ValueError(f"tf_denoise takes uint8 B-scans, got {images.dtype.name}")
    if method == "none":
        return images
    shape = tf.shape(images)
    rank = images.shape.rank
    if rank == 2:
        batch = images[None]
    elif rank == 3:
        batch = images
    elif rank == 4:
        batch = images[..., 0]
    else:
        raise ValueError(f"tf_denoise takes rank 2, 3 or 4 B-scans, got shape {images.shape}")
    return tf.reshape(_tf_median(batch, strength), shape)


def _tf_median(batch, window: int):
    """Median over window x window neighbourhoods of (batch, rows, columns) uint8, edge pixels repeated."""
    import tensorflow as tf

    r = window // 2
    rows, cols = tf.shape(batch)[1], tf.shape(batch)[2]
    # Clipped indices repeat the edge pixel however small the B-scan (tf.pad's modes cannot: REFLECT and
    # SYMMETRIC need the border narrower than the image), which is OpenCV's BORDER_REPLICATE.
    padded = tf.gather(batch, tf.clip_by_value(tf.range(-r, rows + r), 0, rows - 1), axis=1)
    padded = tf.gather(padded, tf.clip_by_value(tf.range(-r, cols + r), 0, cols - 1), axis=2)
    neighbours = tf.stack([padded[:, dy:dy + rows, dx:dx + cols] for dy in range(window) for dx in range(window)],
                          axis=-1)
    # The median of an odd count is its (count // 2 + 1)-th largest value.
    largest = tf.math.top_k(tf.cast(neighbours, tf.int32), k=window * window // 2 + 1, sorted=True).values
    return tf.cast(largest[..., -1], tf.uint8)
