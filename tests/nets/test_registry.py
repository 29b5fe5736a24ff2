"""The registry states Table I of the paper and where each network's ImageNet weights come from."""

import math
import re

import keras
import numpy as np
import pytest

from octtl.nets import registry
from octtl.nets import googlenet

# Table I: params (millions), depth, input size, largest batch size.
TABLE_I = {
    "vgg16": (138, 16, 224, 32),
    "alexnet": (61, 8, 227, 64),
    "inceptionresnetv2": (55.9, 164, 299, 16),
    "inceptionv3": (23.9, 48, 299, 64),
    "xception": (22.9, 71, 299, 16),
    "densenet201": (20, 201, 224, 16),
    "resnet18": (11.7, 18, 224, 64),
    "googlenet": (7, 22, 224, 64),
    "mobilenetv2": (3.5, 53, 224, 64),
    "squeezenet": (1.24, 18, 227, 64),
}


def test_registry_holds_table_i_in_order():
    assert list(registry.ARCHITECTURES) == list(TABLE_I)


@pytest.mark.parametrize("name", TABLE_I)
def test_entry_states_table_i(name):
    entry = registry.get(name)
    params, depth, input_size, batch = TABLE_I[name]
    assert entry.name == name
    assert (entry.depth, entry.input_size, entry.largest_batch) == (depth, input_size, batch)
    assert (entry.table_params_millions or entry.params_millions) == params
    assert entry.min_input_size <= input_size
    assert entry.preprocess in {"tf", "torch", "caffe"}


def test_googlenet_pins_torchvision_size_and_says_why():
    entry = registry.get("googlenet")
    assert (entry.params_millions, entry.table_params_millions) == (6.6, 7.0)
    assert "torchvision" in entry.notes and "5x5" in entry.notes


@pytest.mark.parametrize("name", TABLE_I)
def test_imagenet_source_is_documented(name):
    files = registry.get(name).imagenet
    assert files
    for weights_file in files:
        assert weights_file.url or weights_file.convert_from
        assert weights_file.url is None or weights_file.url.endswith("/" + weights_file.file_name)
        if weights_file.file_hash is not None:
            assert re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{64}", weights_file.file_hash)


def test_squeezenet_weights_are_the_keras_v1_1_release():
    # Preferred; the converted torchvision squeezenet1_1 files follow it (tests/test_torchvision_weights.py).
    notop = registry.get("squeezenet").imagenet[0]
    assert notop.file_name == "squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert notop.file_hash == "17154246284f555591549ac2c83e127abfbf4307dc4b0060fdaa2931d0fa38da"
    assert not notop.has_classifier


def test_vgg16_imagenet_file_keeps_fc6_fc7():
    assert [f.has_classifier for f in registry.get("vgg16").imagenet] == [True]


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="squeezenet"):
        registry.get("resnet50")


def torch_ceil_max_pool(x, pool, stride):
    """torch's MaxPool2d(pool, stride, ceil_mode=True) on a (size, size) array, written out."""
    size = x.shape[0]
    out = math.ceil((size - pool) / stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    starts = [i * stride for i in range(out)]
    return np.array([[x[r : r + pool, c : c + pool].max() for c in starts] for r in starts])


@pytest.mark.parametrize("pool,stride", [(3, 2), (2, 2)])
@pytest.mark.parametrize("size", range(5, 30))
def test_ceil_mode_pooling_matches_torch(size, pool, stride):
    x = np.random.default_rng(size).normal(size=(size, size)).astype("float32")
    inputs = keras.Input((size, size, 1))
    pooled = keras.Model(inputs, googlenet.max_pool_ceil(inputs, pool, stride, "pool"))(x[None, :, :, None])
    expected = torch_ceil_max_pool(x, pool, stride)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(pooled)[0, :, :, 0], expected)
