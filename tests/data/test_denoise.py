"""octtl.data.denoise: each method reduces noise and keeps flat images flat; TensorFlow's median is OpenCV's, exactly."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from octtl.data import denoise
from octtl.errors import InputError

FILTERS = ("median", "nlm", "bilateral")


def _clean(rows=64, cols=80):
    """Layers of different brightness, like a retina's: flat bands with sharp boundaries."""
    y = np.arange(rows)[:, None] * np.ones((1, cols))
    return np.select([y < 16, y < 30, y < 44], [40.0, 170.0, 90.0], 200.0)


def _mse(a, b):
    return float(np.mean((a.astype(float) - b.astype(float)) ** 2))


def _median_reference(image, window):
    r = window // 2
    padded = np.pad(image, r, mode="edge")
    return np.median(sliding_window_view(padded, (window, window)), axis=(-2, -1)).astype(np.uint8)


@pytest.mark.parametrize("method", FILTERS)
def test_each_method_reduces_noise_against_the_clean_image(method):
    rng = np.random.default_rng(0)
    clean = _clean()
    # Noise of standard deviation 12: within what each method's default strength is made for.
    noisy = np.clip(clean + rng.normal(0, 12, clean.shape), 0, 255).astype(np.uint8)
    out = denoise.denoise(noisy, method)
    assert out.dtype == np.uint8 and out.shape == noisy.shape
    assert _mse(out, clean) < 0.5 * _mse(noisy, clean)


@pytest.mark.parametrize("method", FILTERS)
def test_a_constant_image_stays_constant(method):
    flat = np.full((33, 47, 1), 123, np.uint8)
    np.testing.assert_array_equal(denoise.denoise(flat, method), flat)


def test_none_is_the_identity():
    image = np.random.default_rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    assert denoise.denoise(image, "none") is image
    images = [image, image[:5]]
    assert denoise.denoise_all(images, "none")[0] is images


def test_median_is_the_median_of_the_window_with_edge_pixels_repeated():
    image = np.random.default_rng(2).integers(0, 256, (15, 21), dtype=np.uint8)
    for window in (3, 5, 7):
        np.testing.assert_array_equal(denoise.denoise(image, "median", window), _median_reference(image, window))


def test_strength_changes_the_result():
    rng = np.random.default_rng(3)
    noisy = np.clip(_clean() + rng.normal(0, 20, _clean().shape), 0, 255).astype(np.uint8)
    for method, weak, strong in (("median", 3, 7), ("nlm", 3, 30), ("bilateral", 5, 80)):
        assert _mse(denoise.denoise(noisy, method, weak), noisy) < _mse(denoise.denoise(noisy, method, strong), noisy)


def test_denoise_all_equals_one_by_one_in_order():
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((20, 30), (31, 17), (20, 30))]
    out, seconds = denoise.denoise_all(images, "bilateral", 30, workers=2)
    assert seconds >= 0 and len(out) == 3
    for image, result in zip(images, out):
        np.testing.assert_array_equal(result, denoise.denoise(image, "bilateral", 30))
    stacked, _ = denoise.denoise_all(np.stack([images[0], images[2]])[..., None], "median", 5)
    assert stacked.shape == (2, 20, 30, 1)
    np.testing.assert_array_equal(stacked[1, ..., 0], denoise.denoise(images[2], "median", 5))


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 7), (7, 9), (13, 5), (31, 17)])
@pytest.mark.parametrize("window", [3, 5, 9])
def test_tf_median_equals_denoise_exactly_borders_included(shape, window):
    image = np.random.default_rng(sum(shape) + window).integers(0, 256, shape, dtype=np.uint8)
    expected = denoise.denoise(image, "median", window)
    np.testing.assert_array_equal(expected, _median_reference(image, window))
    np.testing.assert_array_equal(denoise.tf_denoise(image, "median", window).numpy(), expected)


def test_tf_median_takes_batches_of_unknown_shape():
    import tensorflow as tf

    batch = np.random.default_rng(5).integers(0, 256, (3, 11, 13, 1), dtype=np.uint8)
    traced = tf.function(lambda x: denoise.tf_denoise(x, "median"),
                         input_signature=[tf.TensorSpec((None, None, None, 1), tf.uint8)])
    out = traced(batch).numpy()
    for image, result in zip(batch, out):
        np.testing.assert_array_equal(result, denoise.denoise(image, "median"))
    assert denoise.tf_denoise(batch, "none") is not None
    np.testing.assert_array_equal(denoise.tf_denoise(batch[..., 0], "none").numpy(), batch[..., 0])


@pytest.mark.parametrize("method", ["nlm", "bilateral"])
def test_tf_denoise_refuses_what_tensorflow_ops_cannot_write(method):
    with pytest.raises(InputError) as e:
        denoise.tf_denoise(np.zeros((4, 4), np.uint8), method)
    assert f"--denoise={method}" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("method, strength, flag", [
    ("gauss", None, "--denoise=gauss"), ("median", 4, "--denoise_strength=4"),
    ("median", 1, "--denoise_strength=1"), ("median", 3.5, "--denoise_strength=3.5"),
    ("median", 17, "--denoise_strength=17"), ("nlm", 0, "--denoise_strength=0"),
    ("nlm", float("nan"), "--denoise_strength=nan"), ("bilateral", -5, "--denoise_strength=-5"),
    ("bilateral", "x", "--denoise_strength=x"), ("none", 3, "--denoise_strength=3")])
def test_bad_method_or_strength_is_one_line_naming_the_flag(method, strength, flag):
    with pytest.raises(InputError) as e:
        denoise.check(method, strength)
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


def test_check_resolves_the_default_strength():
    assert [denoise.check(m) for m in denoise.METHODS] == [None, 3, 10.0, 25.0]
    assert denoise.check("median", 5.0) == 5 and isinstance(denoise.check("median", 5.0), int)
