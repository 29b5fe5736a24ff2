"""octtl.data.images: decoding, centre crop and resize equal to TensorFlow's ops, array for array."""

import io

import numpy as np
import pytest

from conftest import REPO
from octtl.data import images

tf = pytest.importorskip("tensorflow")

REAL = REPO.parent / "shared" / "data" / "oct2017-dev"
SIZES = (96, 128, 224, 227, 299)


def _png(array, mode=None) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG") if mode != "P" else \
        Image.fromarray(array).convert("P").save(buffer, format="PNG")
    return buffer.getvalue()


def _rng(seed=0):
    return np.random.default_rng(seed)


PNG_CASES = {
    "gray8": lambda: _png(_rng().integers(0, 256, (37, 41), np.uint8)),
    "gray16": lambda: _png(_rng().integers(0, 65536, (37, 41), np.uint16)),
    "gray_alpha": lambda: _png(_rng().integers(0, 256, (37, 41, 2), np.uint8), "LA"),
    "rgb": lambda: _png(_rng().integers(0, 256, (37, 41, 3), np.uint8)),
    "rgba": lambda: _png(_rng().integers(0, 256, (37, 41, 4), np.uint8)),
    "palette": lambda: _png(_rng().integers(0, 256, (37, 41, 3), np.uint8), "P"),
    "bilevel": lambda: _png((_rng().integers(0, 2, (37, 41)) * 255).astype(np.uint8).astype(bool), "1"),
}


@pytest.mark.parametrize("case", sorted(PNG_CASES))
def test_decode_png_gives_tensorflows_gray_pixels(case):
    png = PNG_CASES[case]()
    got = images.decode_png(png)
    expected = tf.io.decode_png(png, channels=1, dtype=tf.uint8).numpy()
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_decode_png_refuses_other_formats():
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buffer, format="BMP")
    with pytest.raises(ValueError, match="not a PNG"):
        images.decode_png(buffer.getvalue())


# Odd and even B-scans, smaller and larger than odd and even crops, along each axis on its own.
CROP_CASES = [(rows, cols, target) for rows in (5, 6, 17, 18) for cols in (5, 6, 17, 18) for target in (7, 8, 16)]


@pytest.mark.parametrize("rows, cols, target", CROP_CASES)
def test_crop_or_pad_is_resize_with_crop_or_pad(rows, cols, target):
    image = _rng(rows * 100 + cols).integers(1, 256, (rows, cols, 1), np.uint8)
    expected = tf.image.resize_with_crop_or_pad(image, target, target + 1).numpy()
    np.testing.assert_array_equal(images.crop_or_pad(image, target, target + 1), expected)


def _synthetic_bscans(count=3):
    from octtl.synthetic import render

    volume, _ = render.make_volume(np.random.default_rng(0), count, 496, 512, np.uint8)
    return [bscan[..., None] for bscan in volume]


def _real_bscans(count=4):
    from PIL import Image

    paths = sorted(REAL.glob("*/*.jpeg"))[::60][:count]
    if not paths:
        pytest.skip(f"no real B-scans at {REAL}")
    return [np.asarray(Image.open(p).convert("L"))[..., None] for p in paths]


@pytest.mark.parametrize("source", ["synthetic", "real"])
def test_resize_is_tensorflows_antialiased_bilinear_float_for_float(source):
    bscans = _synthetic_bscans() if source == "synthetic" else _real_bscans()
    for size in SIZES:
        for bscan in bscans:
            expected = tf.image.resize(bscan, (size, size), antialias=True).numpy()
            got = images.resize(bscan, size)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", images.CROPS)
def test_crop_is_pipeline_crop(mode):
    from octtl.data import pipeline

    bscans = _synthetic_bscans(2)
    stack = np.stack(bscans)
    for size in (96, 299, 600):
        expected = np.stack([pipeline.crop(b, size, mode).numpy() for b in bscans])
        np.testing.assert_array_equal(images.crop(stack, size, mode), expected)
        np.testing.assert_array_equal(images.crop(bscans[0], size, mode), expected[0])


def test_scale_and_translate_is_tensorflows_for_any_scale_and_translation():
    # Shrinking and enlarging, shifted either way, samples beyond the input included (they give 0).
    rng = _rng(3)
    for _ in range(40):
        rows, cols = rng.integers(3, 300, 2)
        size = tuple(int(v) for v in rng.integers(1, 200, 2))
        scale = rng.uniform(0.05, 3.0, 2).astype(np.float32)
        translation = rng.uniform(-40, 40, 2).astype(np.float32)
        image = rng.integers(0, 256, (rows, cols, 1), np.uint8)
        expected = tf.raw_ops.ScaleAndTranslate(images=tf.cast(image, tf.float32)[None], size=size, scale=scale,
                                                translation=translation, kernel_type="triangle",
                                                antialias=True)[0].numpy()
        np.testing.assert_array_equal(images.scale_and_translate(image, size, scale, translation), expected)


def test_to_uint8_rounds_half_to_even_and_clips_as_tensorflow():
    x = np.array([-3.0, 0.5, 1.5, 2.5, 254.5, 255.4, 300.0], np.float32)
    expected = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8).numpy()
    np.testing.assert_array_equal(images.to_uint8(x), expected)


def test_an_unknown_crop_mode_is_refused():
    with pytest.raises(ValueError, match="crop mode"):
        images.crop(np.zeros((4, 4, 1), np.uint8), 2, "stretch")
