"""octtl.data.augment_numpy: octtl.data.augment's transformations in numpy, pixel for pixel for the same draws."""

import math

import numpy as np
import pytest

from octtl.data import augment_numpy as an
from octtl.errors import InputError

SIZE = 21
SETS = [("flip",), ("shift",), ("scale",), ("intensity",), ("speckle",), ("shift", "scale"), an.AUGMENTATIONS]


def _views(n=8, side=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 1), dtype=np.uint8)


def _tf_draws(batch, size, augmentations, strength, seed):
    """The parameters octtl.data.augment's batch function draws from `seed`, drawn here the way it draws them."""
    import tensorflow as tf

    r = an.ranges(strength)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=5)
    shift = an.max_shift(size, strength) if "shift" in augmentations else 0
    draws = {}
    if "scale" in augmentations:
        draws["zoom"] = tf.random.stateless_uniform([batch], seeds[0], *r["zoom"]).numpy()
    if shift:
        draws["offset"] = tf.random.stateless_uniform([batch, 2], seeds[1], -shift, shift + 1, tf.int32).numpy()
    if "flip" in augmentations:
        draws["flip"] = (tf.random.stateless_uniform([batch], seeds[2]) < r["flip_probability"]).numpy()
    if "intensity" in augmentations:
        u = tf.random.stateless_uniform([batch, 2], seeds[3])
        draws["gain"] = (r["gain"][0] + (r["gain"][1] - r["gain"][0]) * u[:, 0]).numpy()
        draws["gamma"] = (an.GAMMA ** (strength * (2 * u[:, 1] - 1))).numpy()
    if "speckle" in augmentations:
        draws["noise"] = tf.random.stateless_normal([batch, size, size, 1], seeds[4],
                                                    stddev=r["speckle_std"]).numpy()
    return an.Draws(**draws)


@pytest.mark.parametrize("augmentations", SETS)
@pytest.mark.parametrize("size, strength", [(21, 1.0), (64, 2.0), (96, 0.5)])
def test_the_same_draws_give_tensorflows_batch_pixel_for_pixel(augmentations, size, strength):
    pytest.importorskip("tensorflow")
    from octtl.data import augment

    margin = an.margin(size, augmentations, strength)
    views = _views(12, size + 2 * margin, seed=size)
    seed = np.array([size, 3], np.int64)
    expected, _ = augment.make_augment(size, margin, augmentations, strength)(views, np.zeros(12), seed)
    got = an.apply(views, _tf_draws(12, size, augmentations, strength, seed), size, margin)
    np.testing.assert_array_equal(got, expected.numpy())


@pytest.mark.parametrize("mode", an.images_lib.CROPS)
@pytest.mark.parametrize("shape", [(60, 70), (30, 40), (17, 25), (496, 512)])
@pytest.mark.parametrize("size, margin", [(21, 8), (224, 47)])
def test_views_are_tensorflows_views(mode, shape, size, margin):
    pytest.importorskip("tensorflow")
    from octtl.data import augment

    image = np.random.default_rng(shape[0]).integers(0, 256, shape + (1,), dtype=np.uint8)
    np.testing.assert_array_equal(an.view(image, size, margin, mode), augment.view(image, size, margin, mode).numpy())


@pytest.mark.parametrize("call, flag", [
    (lambda: an.parse("flip,rotate"), "--augment=flip,rotate"),
    (lambda: an.check_strength(5), "--augment_strength=5"),
    (lambda: an.margin(224, ("shift",), -1), "--augment_strength=-1")])
def test_bad_names_and_strengths_are_one_line_naming_the_flag(call, flag):
    with pytest.raises(InputError) as e:
        call()
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


# Properties, numpy only: each transformation does what augment's docstring says for the parameters it is given.

def test_without_augmentations_the_batch_is_the_central_window():
    margin = 5
    views = _views(side=SIZE + 2 * margin)
    out, labels = an.make_augment(SIZE, margin, ())(views, np.arange(8), (0, 0, 0))
    np.testing.assert_array_equal(out, views[:, margin:-margin, margin:-margin])
    np.testing.assert_array_equal(labels, np.arange(8))
    # Parameters that change nothing (zoom 1, no shift, gain and gamma 1, no noise) give the window too.
    neutral = an.Draws(zoom=np.ones(8, np.float32), offset=np.zeros((8, 2), int), flip=np.zeros(8, bool),
                       gain=np.ones(8, np.float32), gamma=np.ones(8, np.float32),
                       noise=np.zeros((8, SIZE, SIZE, 1), np.float32))
    np.testing.assert_array_equal(an.apply(views, neutral, SIZE, margin), views[:, margin:-margin, margin:-margin])


def test_flip_mirrors_columns():
    views = _views()
    flip = np.array([True, False] * 4)
    out = an.apply(views, an.Draws(flip=flip), SIZE, 0)
    np.testing.assert_array_equal(out[flip], views[flip][:, :, ::-1])
    np.testing.assert_array_equal(out[~flip], views[~flip])


@pytest.mark.parametrize("dy, dx", [(0, 3), (-2, 0), (4, -1)])
def test_a_shift_of_k_pixels_moves_the_window_by_k(dy, dx):
    margin = 5
    views = _views(2, SIZE + 2 * margin)
    out = an.apply(views, an.Draws(offset=np.array([[dy, dx]] * 2)), SIZE, margin)
    np.testing.assert_array_equal(out, views[:, margin + dy:margin + dy + SIZE, margin + dx:margin + dx + SIZE])


def test_zoom_keeps_the_centre_pixel_and_enlarges_about_it():
    margin = an.margin(SIZE, ("scale",))
    side = SIZE + 2 * margin
    views = _views(2, side)
    out = an.apply(views, an.Draws(zoom=np.float32([0.9, 1.1])), SIZE, margin)
    np.testing.assert_array_equal(out[:, SIZE // 2, SIZE // 2], views[:, side // 2, side // 2])
    # A ramp along the columns: zoom z turns a step of one grey level per pixel into 1 / z per pixel.
    ramp = np.broadcast_to(np.arange(side, dtype=np.uint8)[None, :, None] * 4, (side, side, 1))
    out = an.apply(np.stack([ramp, ramp]), an.Draws(zoom=np.float32([0.9, 1.1])), SIZE, margin)
    slopes = (out[:, SIZE // 2, -1, 0].astype(float) - out[:, SIZE // 2, 0, 0]) / (SIZE - 1)
    np.testing.assert_allclose(slopes, [4 / 0.9, 4 / 1.1], atol=0.05)


def test_gain_and_gamma_map_a_known_pixel():
    views = np.full((3, SIZE, SIZE, 1), 128, np.uint8)
    views[:, 0, 0] = 0
    draws = an.Draws(gain=np.float32([1.0, 1.2, 0.8]), gamma=np.float32([1.0, 1.0, 1.25]))
    out = an.apply(views, draws, SIZE, 0)
    assert (out[:, 0, 0] == 0).all()  # black stays black
    assert list(out[:, 5, 5, 0]) == [128, round(1.2 * 128), round(255 * 0.8 * (128 / 255) ** 1.25)]


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_speckle_has_the_stated_spread(strength):
    views = np.full((4, 40, 40, 1), 128, np.uint8)
    out, _ = an.make_augment(40, 0, ("speckle",), strength)(views, np.zeros(4), (7, 0, 0))
    ratio = out.astype(float) / 128
    assert abs(ratio.mean() - 1) < 0.01
    assert abs(ratio.std() - 0.1 * strength) < 0.01 * strength + 0.003


def test_draws_stay_in_their_ranges():
    draws = an.draw(4000, 224, an.AUGMENTATIONS, 2.0, (1, 2, 3))
    r = an.ranges(2.0)
    assert r["zoom"][0] <= draws.zoom.min() and draws.zoom.max() <= r["zoom"][1]
    assert np.abs(draws.offset).max() == an.max_shift(224, 2.0) == math.floor(0.2 * 224)
    assert 0.45 < draws.flip.mean() < 0.55
    assert r["gain"][0] <= draws.gain.min() and draws.gain.max() <= r["gain"][1]
    assert r["gamma"][0] <= draws.gamma.min() and draws.gamma.max() <= r["gamma"][1]


def test_a_batch_is_reproduced_from_seed_epoch_and_step_and_each_transformation_draws_alone():
    margin = an.margin(SIZE, an.AUGMENTATIONS)
    views = _views(side=SIZE + 2 * margin)
    augment = an.make_augment(SIZE, margin, an.AUGMENTATIONS)
    first, _ = augment(views, None, (5, 1, 2))
    np.testing.assert_array_equal(first, augment(views, None, (5, 1, 2))[0])
    for other in ((6, 1, 2), (5, 2, 2), (5, 1, 3), (-5, 1, 2)):
        assert not np.array_equal(first, augment(views, None, other)[0])
    alone, together = an.draw(8, SIZE, ("flip",), 1.0, (5, 1, 2)), an.draw(8, SIZE, an.AUGMENTATIONS, 1.0, (5, 1, 2))
    np.testing.assert_array_equal(alone.flip, together.flip)


def test_epoch_batches_shuffle_per_epoch_drop_the_last_partial_batch_and_repeat_per_seed():
    views, labels = _views(10), np.arange(10)
    run = lambda seed, epoch: list(an.epoch_batches(views, labels, range(9), 4, seed, epoch, SIZE,  # noqa: E731
                                                    augmentations=("flip",)))
    batches = run(0, 0)
    assert len(batches) == 2 and all(x.shape == (4, SIZE, SIZE, 1) for x, _ in batches)
    seen = np.concatenate([y for _, y in batches])
    assert len(set(seen)) == 8 and set(seen) <= set(range(9))
    again = run(0, 0)
    assert all(np.array_equal(x, x2) and np.array_equal(y, y2) for (x, y), (x2, y2) in zip(batches, again))
    assert any(not np.array_equal(y, y2) for (_, y), (_, y2) in zip(batches, run(0, 1)))
    plain = list(an.epoch_batches(views, labels, range(9), 4, 0, 0, SIZE))
    np.testing.assert_array_equal(plain[0][0], views[plain[0][1]])


def test_too_small_a_margin_is_refused():
    with pytest.raises(ValueError, match=r"margin 3 .*\(margin 4 needed\)"):
        an.make_augment(30, 3, ("shift",), 1.0)
