"""build(): the ten Table I networks, the paper's head swap, and strict weight loading."""

import shutil

import h5py
import keras
import numpy as np
import pytest

from conftest import SQUEEZENET_H5
from octtl.nets import registry
from octtl.errors import WeightsError
from octtl.nets import loading, models

# Learnable parameters of the 1000-class networks, millions: Table I, except googlenet (see the registry).
PARAMS_MILLIONS = {
    "vgg16": 138,
    "alexnet": 61,
    "inceptionresnetv2": 55.9,
    "inceptionv3": 23.9,
    "xception": 22.9,
    "densenet201": 20,
    "resnet18": 11.7,
    "googlenet": 6.6,
    "mobilenetv2": 3.5,
    "squeezenet": 1.24,
}
# Smallest input each network takes, for fast tests.
SMALL_SIZE = {
    "vgg16": 32,
    "alexnet": 63,
    "inceptionresnetv2": 75,
    "inceptionv3": 75,
    "xception": 71,
    "densenet201": 32,
    "resnet18": 32,
    "googlenet": 32,
    "mobilenetv2": 32,
    "squeezenet": 32,
}
# Keras' tensor conversion under numpy 2, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


def learnable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 1)).astype("float32")


def is_softmax(layer):
    return isinstance(layer, keras.layers.Activation) and layer.get_config()["activation"] == "softmax"


def kept_layers(full, classifier):
    """The 1000-class network's layers that the head swap keeps: all but the classifier and its softmax."""
    return [layer for layer in full.layers if layer.name != classifier and not is_softmax(layer)]


def unnamed_config(layer):
    config = layer.get_config()
    # Names vary per process, and loading weights freezes batch norm.
    config.pop("name")
    config.pop("trainable", None)
    return type(layer), config


def assert_only_head_is_new(full, swapped, classifier):
    """Same layers in the same order with the same configuration, plus the new Glorot head and softmax."""
    new = [layer.name for layer in swapped.layers if layer.name in (models.HEAD, models.HEAD_SOFTMAX)]
    assert new == [models.HEAD, models.HEAD_SOFTMAX]
    assert swapped.layers[-1].name == models.HEAD_SOFTMAX
    rest = [layer for layer in swapped.layers if layer.name not in new]
    # keras.applications auto-names some layers per process, so compare by position, not name.
    kept = kept_layers(full, classifier)
    assert [unnamed_config(layer) for layer in rest] == [unnamed_config(layer) for layer in kept]

    head = swapped.get_layer(models.HEAD)
    old = full.get_layer(classifier)
    assert type(head) is type(old)
    assert head.get_config()["kernel_initializer"]["class_name"] == "GlorotUniform"
    kernel, bias = head.get_weights()
    fan_in, fan_out = int(np.prod(kernel.shape[:-1])), kernel.shape[-1]
    assert np.abs(kernel).max() <= np.sqrt(6 / (fan_in + fan_out))
    assert kernel.shape[:-1] == tuple(old.kernel.shape[:-1]) and not bias.any()


def test_every_architecture_is_tested():
    assert set(PARAMS_MILLIONS) == set(SMALL_SIZE) == set(registry.ARCHITECTURES)


@pytest.mark.parametrize("arch", PARAMS_MILLIONS)
def test_native_networks_match_table_i_and_swap_head(arch):
    entry = registry.get(arch)
    size = entry.input_size
    full = models.build(arch, num_classes=1000)
    assert full.name == arch
    assert full.input_shape == (None, size, size, 1)
    assert full.output_shape == (None, 1000)
    assert learnable_params(full) == pytest.approx(PARAMS_MILLIONS[arch] * 1e6, rel=0.02)
    assert entry.params_millions == PARAMS_MILLIONS[arch]

    # build() swaps the head of exactly this network; doing it here saves building the slow ones twice.
    swapped = models.swap_head(full, entry.classifier, 2)
    assert_only_head_is_new(full, swapped, entry.classifier)
    probabilities = keras.ops.convert_to_numpy(swapped(images(size, batch=1), training=False))
    assert probabilities.shape == (1, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)


# Weight files and the head swap work layer by layer, so these cover every kind of layer and head the ten networks
# have (conv classifier, dense with dropout chain, batch norm, depthwise, auto-named keras.applications layers)
# without building the slowest ones (inceptionresnetv2, densenet201: 8 s a build) again and again. Every network
# is still built, pinned and head-swapped in test_native_networks_match_table_i_and_swap_head.
REPRESENTATIVE = ("squeezenet", "resnet18", "googlenet", "mobilenetv2", "inceptionv3", "vgg16")


@pytest.mark.parametrize("arch", REPRESENTATIVE)
def test_head_swap_keeps_every_pretrained_weight(arch, tmp_path):
    size = SMALL_SIZE[arch]
    classifier = registry.get(arch).classifier
    full = models.build(arch, num_classes=1000, image_size=size)
    path = str(tmp_path / "imagenet_like.weights.h5")
    full.save_weights(path)

    swapped = models.build(arch, weights=path, image_size=size)
    assert_only_head_is_new(full, swapped, classifier)
    before = [w for layer in kept_layers(full, classifier) for w in layer.get_weights()]
    after = [w for layer in swapped.layers if layer.name != models.HEAD for w in layer.get_weights()]
    assert len(before) == len(after)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    assert keras.ops.convert_to_numpy(swapped(images(size), training=False)).shape == (2, 2)


@pytest.mark.parametrize("arch", REPRESENTATIVE[:4])  # inceptionv3 by order: test_legacy_file_with_other_layer_names_loads_by_order
def test_weights_round_trip_through_every_format(arch, tmp_path):
    size = SMALL_SIZE[arch]
    model = models.build(arch, image_size=size)
    x = images(size)
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    paths = [str(tmp_path / name) for name in ("model.weights.h5", "model.keras", "legacy.h5")]
    model.save_weights(paths[0])
    model.save(paths[1])
    model.save(paths[2])
    for path in paths:
        loaded = models.build(arch, image_size=size, weights=path, freeze_batchnorm=False)
        for old, new in zip(model.weights, loaded.weights, strict=True):
            np.testing.assert_array_equal(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new), path)

    restored = keras.saving.load_model(paths[1])
    assert restored.name == arch
    np.testing.assert_allclose(keras.ops.convert_to_numpy(restored(x, training=False)), expected, atol=1e-6)


def test_legacy_file_with_other_layer_names_loads_by_order(tmp_path):
    # InceptionV3's keras.applications layers are auto-named, so a second build in the process renames them.
    first = models.build("inceptionv3", image_size=75)
    path = str(tmp_path / "legacy.h5")
    first.save(path)
    second = models.build("inceptionv3", image_size=75, weights=path)
    assert {layer.name for layer in first.layers} != {layer.name for layer in second.layers}
    for old, new in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(old), keras.ops.convert_to_numpy(new))


def test_squeezenet_loads_the_real_imagenet_weights():
    model = models.build("squeezenet", weights=str(SQUEEZENET_H5))
    loaded = 0
    with h5py.File(SQUEEZENET_H5, "r") as f:
        for name in f.attrs["layer_names"]:
            weight_names = f[name].attrs["weight_names"]
            if len(weight_names):
                layer = model.get_layer(loading.layer_name(name.decode()))
                for array, weight_name in zip(layer.get_weights(), weight_names, strict=True):
                    np.testing.assert_array_equal(array, f[name][weight_name])
                loaded += 1
    assert loaded == 1 + 8 * 3  # conv1 and three convolutions per fire module

    random = models.build("squeezenet")
    x = images(227, batch=1)
    activations = [keras.Model(m.input, m.get_layer("conv1").output)(x) for m in (model, random)]
    assert not np.allclose(*(keras.ops.convert_to_numpy(a) for a in activations), atol=1e-3)


@pytest.fixture
def squeezenet_h5_copy(tmp_path):
    path = tmp_path / "squeezenet.h5"
    shutil.copyfile(SQUEEZENET_H5, path)
    return path


def test_missing_layer_is_named(squeezenet_h5_copy):
    with h5py.File(squeezenet_h5_copy, "r+") as f:
        f["fire9/expand3x3"].attrs["weight_names"] = np.array([], dtype="S1")
    with pytest.raises(WeightsError, match=r"fire9_expand3x3"):
        models.build("squeezenet", weights=str(squeezenet_h5_copy), image_size=32)


def test_wrong_shape_is_named(squeezenet_h5_copy):
    with h5py.File(squeezenet_h5_copy, "r+") as f:
        del f["fire4/squeeze1x1/uniform8"]
        f["fire4/squeeze1x1"].create_dataset("uniform8", data=np.zeros((1, 1, 128, 33), "float32"))
    with pytest.raises(WeightsError, match=r"fire4_squeeze1x1.*33"):
        models.build("squeezenet", weights=str(squeezenet_h5_copy), image_size=32)


def test_extra_layer_is_named(squeezenet_h5_copy):
    with h5py.File(squeezenet_h5_copy, "r+") as f:
        f.create_group("fire10").attrs["weight_names"] = np.array([b"fire10_w"])
        f["fire10"].create_dataset("fire10_w", data=np.zeros(3, "float32"))
        f.attrs["layer_names"] = np.append(f.attrs["layer_names"], np.array([b"fire10"]))
    with pytest.raises(WeightsError, match="fire10"):
        models.build("squeezenet", weights=str(squeezenet_h5_copy), image_size=32)


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5", ".keras"])
def test_other_networks_weights_are_refused(suffix, tmp_path):
    path = str(tmp_path / f"resnet18{suffix}")
    source = models.build("resnet18", image_size=32)
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    with pytest.raises(WeightsError, match="googlenet.*layer"):
        models.build("googlenet", weights=path, image_size=32)


def test_keras3_file_missing_a_layer_is_named(tmp_path):
    path = str(tmp_path / "squeezenet.weights.h5")
    models.build("squeezenet", image_size=32).save_weights(path)
    with h5py.File(path, "r+") as f:
        del f["layers/conv2d_1/vars"]  # fire2's squeeze
    with pytest.raises(WeightsError, match=r"fire2_squeeze1x1"):
        models.build("squeezenet", weights=path, image_size=32)


def test_non_weights_files_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    with pytest.raises(WeightsError, match="neither"):
        models.build("squeezenet", weights=str(text), image_size=32)
    with pytest.raises(WeightsError, match="no such file"):
        models.build("squeezenet", weights=str(tmp_path / "absent.h5"), image_size=32)


def test_pretrained_batchnorm_is_frozen_and_all_else_trains(tmp_path):
    path = str(tmp_path / "resnet18.weights.h5")
    models.build("resnet18", image_size=32).save_weights(path)
    batchnorm = keras.layers.BatchNormalization

    pretrained = models.build("resnet18", image_size=32, weights=path)
    assert all(layer.trainable != isinstance(layer, batchnorm) for layer in pretrained.layers if layer.weights)
    random = models.build("resnet18", image_size=32)
    unfrozen = models.build("resnet18", image_size=32, weights=path, freeze_batchnorm=False)
    for model in (random, unfrozen):
        assert all(layer.trainable for layer in model.layers)


def test_trainable_from_freezes_the_layers_before_it():
    model = models.build("resnet18", image_size=32, trainable_from="layer4_0_conv1")
    names = [layer.name for layer in model.layers]
    start = names.index("layer4_0_conv1")
    assert not any(layer.trainable for layer in model.layers[:start])
    assert all(layer.trainable for layer in model.layers[start:])
    with pytest.raises(ValueError, match="not a layer"):
        models.build("resnet18", image_size=32, trainable_from="layer9")


def test_gray_uint8_input_equals_its_float_values():
    model = models.build("squeezenet", image_size=32)
    gray = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(gray)), keras.ops.convert_to_numpy(model(gray.astype("float32")))
    )


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = models.build("squeezenet", image_size=32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer(models.HEAD).compute_dtype == "float16"
    assert model.output.dtype == "float32"


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="choose one of"):
        models.build("resnet50")
    with pytest.raises(ValueError, match="at least 75 px"):
        models.build("inceptionv3", image_size=64)
    with pytest.raises(ValueError, match="num_classes"):
        models.build("squeezenet", num_classes=1)


def test_a_sigmoid_head_can_say_absent():
    # SqueezeNet's classifier is followed by a ReLU before its pooling: under a sigmoid that would hold every
    # output at 0.5 or above, so the head is linear there (as for a frozen backbone); the softmax keeps the paper's.
    x = np.random.default_rng(0).integers(0, 256, (2, 48, 48, 1)).astype(np.float32)
    types = models.build("squeezenet", 3, image_size=48, activation="sigmoid")
    assert "relu_conv10" not in {layer.name for layer in types.layers}
    head = types.get_layer(models.HEAD)
    kernel, bias = head.get_weights()
    head.set_weights([np.zeros_like(kernel), np.full_like(bias, -3.0)])
    np.testing.assert_allclose(np.asarray(types(x)), 1 / (1 + np.exp(3.0)), rtol=1e-5)
    assert "relu_conv10" in {layer.name for layer in models.build("squeezenet", 2, image_size=48).layers}
    assert "relu_conv10" not in {layer.name for layer in models.build("squeezenet", 2, image_size=48,
                                                                      linear_head=True).layers}
