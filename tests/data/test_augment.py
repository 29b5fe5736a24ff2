"""octtl.data.augment: seeded augmentation of training batches, each transformation checked on its own with numpy."""

import math

import numpy as np
import pytest

from octtl.data import augment, augment_numpy

from octtl.data import pipeline
from octtl.errors import InputError

SIZE = 21


def _views(n=12, side=SIZE, seed=0):
    """Distinct random B-scan views: every window of one is unlike any other, so a window can be located."""
    return np.random.default_rng(seed).integers(0, 256, (n, side, side, 1), dtype=np.uint8)


def _labels(n=12):
    return (np.arange(n) % 2).astype(np.int32)


def _epochs(ds, count=2):
    """`count` epochs of a dataset, each a list of (images, labels) numpy batches."""
    return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(count)]


def _seed(a, b=0):
    return np.array([a, b], np.int64)


def test_without_augmentation_the_batches_are_data_training_batches_byte_for_byte():
    views, labels = _views(), _labels()
    indices = [0, 2, 3, 5, 6, 7, 9, 10, 11]
    expected = _epochs(pipeline.training_batches(pipeline.Decoded(views, labels), indices, 4, seed=3))
    got = _epochs(augment.training_batches(views, labels, indices, 4, 3, SIZE))
    assert len(got[0]) == 2  # nine examples: two full batches of 4, the ninth dropped
    for epoch, reference in zip(got, expected):
        for (x, y), (x0, y0) in zip(epoch, reference):
            assert x.dtype == x0.dtype and x.tobytes() == x0.tobytes()
            np.testing.assert_array_equal(y, y0)


def test_augmentation_is_reproducible_per_seed_and_differs_between_seeds_and_epochs():
    every = augment_numpy.AUGMENTATIONS
    margin = augment_numpy.margin(SIZE, every, 1.0)
    views, labels = _views(side=SIZE + 2 * margin), _labels()

    def run(seed):
        return _epochs(augment.training_batches(views, labels, range(12), 4, seed, SIZE, margin, every))

    first, again, other = run(5), run(5), run(6)
    for epoch, epoch_again in zip(first, again):
        for (x, y), (x2, y2) in zip(epoch, epoch_again):
            np.testing.assert_array_equal(x, x2)
            np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][0][0], other[0][0][0])
    assert not np.array_equal(np.concatenate([x for x, _ in first[0]]), np.concatenate([x for x, _ in first[1]]))


def test_each_epoch_draws_new_augmentations():
    # One image everywhere: the reshuffle changes nothing, so any difference between epochs is the draws'.
    views = np.repeat(_views(n=1), 16, axis=0)
    epochs = _epochs(augment.training_batches(views, _labels(16), range(16), 16, 0, SIZE, 0, ("flip",)), 3)
    flips = [tuple(not np.array_equal(image, views[0]) for image in epoch[0][0]) for epoch in epochs]
    assert len(set(flips)) == 3


def test_augmentation_changes_training_batches_but_not_their_examples_or_order():
    margin = augment_numpy.margin(SIZE, augment_numpy.AUGMENTATIONS, 1.0)
    views, labels = _views(side=SIZE + 2 * margin), _labels()
    plain = _epochs(augment.training_batches(views, labels, range(12), 4, 1, SIZE, margin))
    views_before = views.copy()
    augmented = _epochs(augment.training_batches(views, labels, range(12), 4, 1, SIZE, margin,
                                                 augment_numpy.AUGMENTATIONS))
    np.testing.assert_array_equal(views, views_before)  # the decoded views (validation's source) are untouched
    for epoch, reference in zip(augmented, plain):
        for (x, y), (x0, y0) in zip(epoch, reference):
            assert x.shape == x0.shape == (4, SIZE, SIZE, 1) and x.dtype == np.uint8
            np.testing.assert_array_equal(y, y0)  # the same shuffle
            assert all(not np.array_equal(a, b) for a, b in zip(x, x0))


def test_flip_mirrors_some_images_left_right_and_leaves_the_others():
    views, labels = _views(n=16), _labels(16)
    plain = _epochs(augment.training_batches(views, labels, range(16), 8, 2, SIZE), 1)[0]
    flipped = _epochs(augment.training_batches(views, labels, range(16), 8, 2, SIZE, 0, ("flip",)), 1)[0]
    outcomes = []
    for (x, _), (x0, _) in zip(flipped, plain):
        for image, original in zip(x, x0):
            mirrored = np.array_equal(image, np.fliplr(original))
            assert mirrored or np.array_equal(image, original)
            outcomes.append(mirrored)
    assert 0 < sum(outcomes) < len(outcomes)


@pytest.mark.parametrize("strength", [0.5, 1.0, 2.0])
def test_shift_is_a_window_of_the_view_offset_by_at_most_the_range(strength):
    size = 30
    limit = math.floor(0.1 * strength * size)
    margin = augment_numpy.margin(size, ("shift",), strength)
    assert margin == limit + 1  # one pixel to spare
    views = _views(n=16, side=size + 2 * margin)
    out, _ = augment.make_augment(size, margin, ("shift",), strength)(views, _labels(16), _seed(9))
    offsets = []
    for image, v in zip(out.numpy(), views):
        found = [(dy, dx) for dy in range(-margin, margin + 1) for dx in range(-margin, margin + 1)
                 if np.array_equal(image, v[margin + dy:margin + dy + size, margin + dx:margin + dx + size])]
        assert len(found) == 1
        offsets.append(found[0])
    offsets = np.array(offsets)
    assert np.abs(offsets).max() <= limit and np.abs(offsets).max() >= 1


def test_scale_zooms_about_the_views_centre_pixel():
    size = 21  # odd: the output's centre pixel samples the view's centre pixel exactly
    margin = augment_numpy.margin(size, ("scale",), 1.0)
    assert margin == math.ceil((20 / 0.9 - 20) / 2) + 1
    side = size + 2 * margin
    views = _views(n=16, side=side)
    out, _ = augment.make_augment(size, margin, ("scale",), 1.0)(views, _labels(16), _seed(4))
    out = out.numpy()
    np.testing.assert_array_equal(out[:, size // 2, size // 2], views[:, side // 2, side // 2])
    plain = views[:, margin:margin + size, margin:margin + size]
    assert sum(not np.array_equal(a, b) for a, b in zip(out, plain)) >= 14  # a zoom of exactly 1 is unlikely


def test_scale_at_its_extremes_stays_inside_the_view_with_the_margin():
    for size in (21, 224, 299):
        for strength in (0.5, 1.0, 2.0, 4.0):
            both = augment_numpy.margin(size, ("shift", "scale"), strength)
            reach = (size - 1) / (2 * (1 - 0.1 * strength)) + math.floor(0.1 * strength * size)
            assert (size - 1) / 2 + both >= reach - 1e-9  # the farthest sample lies inside the view
            assert (size - 1) / 2 + both - 2 < reach  # and no more than a pixel to spare


def test_intensity_keeps_black_black_and_the_order_of_grey_levels():
    size = 16
    ramp = np.arange(256, dtype=np.uint8).reshape(1, size, size, 1)
    views = np.repeat(ramp, 16, axis=0)
    out, _ = augment.make_augment(size, 0, ("intensity",), 1.0)(views, _labels(16), _seed(3))
    out = out.numpy().reshape(16, 256).astype(int)
    assert (out[:, 0] == 0).all()
    assert (np.diff(out, axis=1) >= 0).all()
    assert len({row.tobytes() for row in out}) == 16  # a gain and gamma of their own per image
    # The brightest pixel shows the gain: min(255, 255 gain), gain within [0.8, 1.2].
    assert out[:, 255].min() >= math.floor(255 * 0.8) and out[:, 255].min() < 255
    # Gamma in [0.8, 1.25] and gain in [0.8, 1.2] bound the middle grey: 255 * g * 0.5^gamma.
    assert 255 * 0.8 * 0.5 ** 1.25 - 1 <= out[:, 128].min() and out[:, 128].max() <= 255 * 1.2 * 0.5 ** 0.8 + 1


@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_speckle_multiplies_by_noise_of_mean_one_and_the_documented_spread(strength):
    views = np.full((4, 40, 40, 1), 128, np.uint8)
    out, _ = augment.make_augment(40, 0, ("speckle",), strength)(views, _labels(4), _seed(7))
    ratio = out.numpy().astype(float) / 128
    assert abs(ratio.mean() - 1) < 0.01
    assert abs(ratio.std() - 0.1 * strength) < 0.01 * strength + 0.003


def test_margin_is_zero_without_shift_or_scale():
    assert augment_numpy.margin(224, (), 1.0) == 0
    assert augment_numpy.margin(224, ("flip", "intensity", "speckle"), 3.0) == 0
    assert augment_numpy.margin(224, ("shift",), 1.0) == 22 + 1  # floor(22.4) and a pixel to spare
    assert augment_numpy.margin(299, ("shift", "scale"), 1.0) == 29 + 17 + 1  # ceil((298 / 0.9 - 298) / 2) = 17


@pytest.mark.parametrize("mode", pipeline.CROPS)
@pytest.mark.parametrize("shape", [(60, 70), (30, 40), (17, 25)])  # larger than the view; smaller; than the crop
def test_views_centre_is_the_crop_that_validation_sees(mode, shape):
    image = np.random.default_rng(shape[0]).integers(1, 256, shape + (1,), dtype=np.uint8)
    crop = pipeline.crop(image, SIZE, mode).numpy()
    view = augment.view(image, SIZE, 8, mode).numpy()
    assert view.shape == (SIZE + 16, SIZE + 16, 1) and view.dtype == np.uint8
    np.testing.assert_array_equal(augment.center(view[None], 8)[0], crop)
    np.testing.assert_array_equal(augment.view(image, SIZE, 0, mode).numpy(), crop)


@pytest.mark.parametrize("mode", pipeline.CROPS)
def test_view_traces_for_b_scans_of_unknown_size_as_decoding_maps_it(mode):
    import tensorflow as tf

    traced = tf.function(lambda image: augment.view(image, SIZE, 8, mode),
                         input_signature=[tf.TensorSpec((None, None, 1), tf.uint8)])
    for shape in ((60, 70), (25, 33)):
        image = np.random.default_rng(2).integers(0, 256, shape + (1,), dtype=np.uint8)
        np.testing.assert_array_equal(traced(image).numpy(), augment.view(image, SIZE, 8, mode).numpy())


@pytest.mark.parametrize("shape", [(60, 70), (30, 40)])
def test_centre_view_is_the_b_scan_continued_by_reflection_beyond_its_edge(shape):
    image = np.random.default_rng(1).integers(0, 256, shape + (1,), dtype=np.uint8)
    margin, side = 8, SIZE + 16
    pad = 50
    mirrored = np.pad(image[..., 0], pad, mode="reflect")
    top, left = pad + (shape[0] - SIZE) // 2 - margin, pad + (shape[1] - SIZE) // 2 - margin
    np.testing.assert_array_equal(augment.view(image, SIZE, margin, "center").numpy()[..., 0],
                                  mirrored[top:top + side, left:left + side])


def test_resize_view_continues_the_b_scan_instead_of_padding_it():
    rows, cols = np.mgrid[0:40, 0:60]
    image = (60 + rows + 2 * cols).astype(np.uint8)[..., None]  # 60..237, no black
    view = augment.view(image, SIZE, 8, "resize").numpy().astype(int)
    assert view.min() >= 60 and view.max() <= 237
    # Mirrored: the margin's columns repeat those just inside, within a grey level or two of resampling.
    inner, outer = view[8:-8, 8:12, 0], view[8:-8, 7:3:-1, 0]
    assert np.abs(inner - outer).max() <= 3


@pytest.mark.parametrize("text, expected", [("", ()), ("none", ()), ("speckle, flip", ("flip", "speckle")),
                                            ("shift,flip,shift", ("flip", "shift"))])
def test_parse_reads_a_comma_list_in_a_fixed_order(text, expected):
    assert augment_numpy.parse(text) == expected


@pytest.mark.parametrize("call, flag", [
    (lambda: augment_numpy.parse("flip,rotate"), "--augment=flip,rotate"),
    (lambda: augment_numpy.parse("none,flip"), "--augment=none,flip"),
    (lambda: augment_numpy.check_strength(0), "--augment_strength=0"),
    (lambda: augment_numpy.check_strength(5), "--augment_strength=5"),
    (lambda: augment_numpy.check_strength("strong"), "--augment_strength=strong"),
    (lambda: augment_numpy.margin(224, ("shift",), -1), "--augment_strength=-1")])
def test_bad_names_and_strengths_are_one_line_naming_the_flag(call, flag):
    with pytest.raises(InputError) as e:
        call()
    assert str(e.value).startswith(flag) and "\n" not in str(e.value)


def test_ranges_scale_with_the_strength():
    r = augment_numpy.ranges(0.5)
    assert r["flip_probability"] == 0.5 and r["shift_fraction"] == pytest.approx(0.05)
    assert r["zoom"] == pytest.approx((0.95, 1.05)) and r["gain"] == pytest.approx((0.9, 1.1))
    assert r["gamma"] == pytest.approx((1.25 ** -0.5, 1.25 ** 0.5)) and r["speckle_std"] == pytest.approx(0.05)


def test_too_small_a_margin_is_refused():
    with pytest.raises(ValueError, match=r"margin 3 .*\(margin 4 needed\)"):
        augment.make_augment(30, 3, ("shift",), 1.0)
