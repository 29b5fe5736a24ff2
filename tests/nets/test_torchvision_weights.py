"""torchvision checkpoints -> octtl networks (octtl/nets/torchvision_weights.py, tools/import_torchvision_weights.py).

Each network's state dict is made here with torchvision's exact tensor names and shapes and random values, and
the converted Keras network must reproduce a PyTorch forward pass of the same weights, written below with
torch.nn.functional (no torchvision needed), to 1e-4 in the logits.
"""

import math
import os
import re
import shutil
import sys

import h5py
import keras
import numpy as np
import pytest

from conftest import SQUEEZENET_H5, run_main
from octtl.errors import WeightsError
from octtl import import_torchvision_weights
from octtl.nets import registry
from octtl.nets import models
from octtl.nets import scaling
from octtl.nets import pretrained
from octtl.nets import torchvision_weights

torch = pytest.importorskip("torch")
F = torch.nn.functional

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
TOLERANCE = 1e-4
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


class StateDict(dict):
    """A torchvision-style state dict filled with random, He-scaled values (activations stay near 1)."""

    def __init__(self, seed):
        super().__init__()
        self.generator = torch.Generator().manual_seed(seed)

    def _normal(self, *shape, std=1.0):
        return torch.randn(*shape, generator=self.generator) * std

    def _uniform(self, *shape, low=0.5, high=1.5):
        return torch.rand(*shape, generator=self.generator) * (high - low) + low

    def conv(self, name, out, inp, kernel, bias=True):
        self[f"{name}.weight"] = self._normal(out, inp, kernel, kernel, std=math.sqrt(2 / (inp * kernel * kernel)))
        if bias:
            self[f"{name}.bias"] = self._normal(out, std=0.1)

    def linear(self, name, out, inp, gain=2.0):
        self[f"{name}.weight"] = self._normal(out, inp, std=math.sqrt(gain / inp))
        self[f"{name}.bias"] = self._normal(out, std=0.1)

    def batch_norm(self, name, channels, scale=(0.5, 1.5)):
        self[f"{name}.weight"] = self._uniform(channels, low=scale[0], high=scale[1])
        self[f"{name}.bias"] = self._normal(channels, std=0.1)
        self[f"{name}.running_mean"] = self._normal(channels, std=0.1)
        self[f"{name}.running_var"] = self._uniform(channels)
        self[f"{name}.num_batches_tracked"] = torch.tensor(0)


# ---- torchvision's state dicts: names and shapes as torchvision.models creates them ----

def alexnet_state_dict(seed=0):
    sd = StateDict(seed)
    for index, (out, inp, kernel) in {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3),
                                      10: (256, 256, 3)}.items():
        sd.conv(f"features.{index}", out, inp, kernel)
    sd.linear("classifier.1", 4096, 256 * 6 * 6)
    sd.linear("classifier.4", 4096, 4096)
    sd.linear("classifier.6", 1000, 4096, gain=1.0)
    return dict(sd)


def resnet18_state_dict(seed=0):
    sd = StateDict(seed)
    sd.conv("conv1", 64, 3, 7, bias=False)
    sd.batch_norm("bn1", 64)
    inp = 64
    for stage, out in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            sd.conv(f"{name}.conv1", out, inp, 3, bias=False)
            sd.batch_norm(f"{name}.bn1", out)
            sd.conv(f"{name}.conv2", out, out, 3, bias=False)
            sd.batch_norm(f"{name}.bn2", out, scale=(0.2, 0.5))  # keeps the residual sums near 1
            if stage > 1 and block == 0:
                sd.conv(f"{name}.downsample.0", out, inp, 1, bias=False)
                sd.batch_norm(f"{name}.downsample.1", out)
            inp = out
    sd.linear("fc", 1000, 512, gain=1.0)
    return dict(sd)


GOOGLENET_INCEPTION = {  # in_channels, then torchvision's Inception arguments
    "inception3a": (192, 64, 96, 128, 16, 32, 32),
    "inception3b": (256, 128, 128, 192, 32, 96, 64),
    "inception4a": (480, 192, 96, 208, 16, 48, 64),
    "inception4b": (512, 160, 112, 224, 24, 64, 64),
    "inception4c": (512, 128, 128, 256, 24, 64, 64),
    "inception4d": (512, 112, 144, 288, 32, 64, 64),
    "inception4e": (528, 256, 160, 320, 32, 128, 128),
    "inception5a": (832, 256, 160, 320, 32, 128, 128),
    "inception5b": (832, 384, 192, 384, 48, 128, 128),
}


def googlenet_state_dict(seed=0):
    sd = StateDict(seed)

    def basic_conv(name, out, inp, kernel):
        sd.conv(f"{name}.conv", out, inp, kernel, bias=False)
        sd.batch_norm(f"{name}.bn", out)

    basic_conv("conv1", 64, 3, 7)
    basic_conv("conv2", 64, 64, 1)
    basic_conv("conv3", 192, 64, 3)
    for name, (inp, ch1, ch3red, ch3, ch5red, ch5, pool) in GOOGLENET_INCEPTION.items():
        basic_conv(f"{name}.branch1", ch1, inp, 1)
        basic_conv(f"{name}.branch2.0", ch3red, inp, 1)
        basic_conv(f"{name}.branch2.1", ch3, ch3red, 3)
        basic_conv(f"{name}.branch3.0", ch5red, inp, 1)
        basic_conv(f"{name}.branch3.1", ch5, ch5red, 3)
        basic_conv(f"{name}.branch4.1", pool, inp, 1)
    # torchvision's checkpoint keeps the auxiliary classifiers it drops from pretrained models.
    for name, inp in (("aux1", 512), ("aux2", 528)):
        basic_conv(f"{name}.conv", 128, inp, 1)
        sd.linear(f"{name}.fc1", 1024, 2048)
        sd.linear(f"{name}.fc2", 1000, 1024)
    sd.linear("fc", 1000, 1024, gain=1.0)
    return dict(sd)


SQUEEZENET_FIRES = {3: (64, 16, 64), 4: (128, 16, 64), 6: (128, 32, 128), 7: (256, 32, 128),
                    9: (256, 48, 192), 10: (384, 48, 192), 11: (384, 64, 256), 12: (512, 64, 256)}


def squeezenet_state_dict(seed=0):
    sd = StateDict(seed)
    sd.conv("features.0", 64, 3, 3)
    for index, (inp, squeeze, expand) in SQUEEZENET_FIRES.items():
        sd.conv(f"features.{index}.squeeze", squeeze, inp, 1)
        sd.conv(f"features.{index}.expand1x1", expand, squeeze, 1)
        sd.conv(f"features.{index}.expand3x3", expand, squeeze, 3)
    sd.conv("classifier.1", 1000, 512, 1)
    return dict(sd)


# ---- PyTorch reference forward passes (eval mode) of torchvision's definitions ----

def alexnet_forward(sd, x):
    def conv(x, name, stride=1, padding=0):
        return F.relu(F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], stride=stride, padding=padding))

    x = F.max_pool2d(conv(x, "features.0", stride=4, padding=2), 3, 2)
    x = F.max_pool2d(conv(x, "features.3", padding=2), 3, 2)
    x = conv(conv(conv(x, "features.6", padding=1), "features.8", padding=1), "features.10", padding=1)
    x = torch.flatten(F.adaptive_avg_pool2d(F.max_pool2d(x, 3, 2), (6, 6)), 1)
    x = F.relu(F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"]))
    x = F.relu(F.linear(x, sd["classifier.4.weight"], sd["classifier.4.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def batch_norm(sd, x, name, eps):
    return F.batch_norm(x, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                        sd[f"{name}.bias"], training=False, eps=eps)


def resnet18_forward(sd, x):
    def conv_bn(x, conv, bn, stride, padding):
        return batch_norm(sd, F.conv2d(x, sd[f"{conv}.weight"], stride=stride, padding=padding), bn, 1e-5)

    x = F.max_pool2d(F.relu(conv_bn(x, "conv1", "bn1", 2, 3)), 3, 2, padding=1)
    for stage in range(1, 5):
        for block in range(2):
            name = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            out = F.relu(conv_bn(x, f"{name}.conv1", f"{name}.bn1", stride, 1))
            out = conv_bn(out, f"{name}.conv2", f"{name}.bn2", 1, 1)
            if f"{name}.downsample.0.weight" in sd:
                x = conv_bn(x, f"{name}.downsample.0", f"{name}.downsample.1", stride, 0)
            x = F.relu(out + x)
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), sd["fc.weight"], sd["fc.bias"])


def googlenet_forward(sd, x):
    def basic_conv(x, name, stride=1, padding=0):
        x = F.conv2d(x, sd[f"{name}.conv.weight"], stride=stride, padding=padding)
        return F.relu(batch_norm(sd, x, f"{name}.bn", 1e-3))

    # transform_input=True, as torchvision builds the pretrained GoogLeNet.
    x = torch.cat([x[:, c : c + 1] * (STD[0, c] / 0.5) + (MEAN[0, c] - 0.5) / 0.5 for c in range(3)], 1)
    x = F.max_pool2d(basic_conv(x, "conv1", stride=2, padding=3), 3, 2, ceil_mode=True)
    x = basic_conv(basic_conv(x, "conv2"), "conv3", padding=1)
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    for name in GOOGLENET_INCEPTION:
        x = torch.cat([
            basic_conv(x, f"{name}.branch1"),
            basic_conv(basic_conv(x, f"{name}.branch2.0"), f"{name}.branch2.1", padding=1),
            basic_conv(basic_conv(x, f"{name}.branch3.0"), f"{name}.branch3.1", padding=1),
            basic_conv(F.max_pool2d(x, 3, 1, padding=1, ceil_mode=True), f"{name}.branch4.1"),
        ], 1)
        if name == "inception3b":
            x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        elif name == "inception4e":
            x = F.max_pool2d(x, 2, 2, ceil_mode=True)
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1), sd["fc.weight"], sd["fc.bias"])


def squeezenet_forward(sd, x):
    def conv(x, name, **kwargs):
        return F.relu(F.conv2d(x, sd[f"{name}.weight"], sd[f"{name}.bias"], **kwargs))

    x = F.max_pool2d(conv(x, "features.0", stride=2), 3, 2, ceil_mode=True)
    for index in SQUEEZENET_FIRES:
        x = conv(x, f"features.{index}.squeeze")
        x = torch.cat([conv(x, f"features.{index}.expand1x1"), conv(x, f"features.{index}.expand3x3", padding=1)], 1)
        if index in (4, 7):
            x = F.max_pool2d(x, 3, 2, ceil_mode=True)
    return torch.flatten(F.adaptive_avg_pool2d(conv(x, "classifier.1"), 1), 1)


NETWORKS = {
    "alexnet": (alexnet_state_dict, alexnet_forward),
    "resnet18": (resnet18_state_dict, resnet18_forward),
    "googlenet": (googlenet_state_dict, googlenet_forward),
    "squeezenet": (squeezenet_state_dict, squeezenet_forward),
}


def torch_logits(arch, state_dict, rgb255):
    """torchvision's usage: [0, 1] pixels, ImageNet mean/std, then the network; float64 for a sharp reference."""
    x = torch.from_numpy(rgb255.transpose(0, 3, 1, 2)).double() / 255
    with torch.no_grad():
        return NETWORKS[arch][1]({k: v.double() for k, v in state_dict.items()}, (x - MEAN) / STD).numpy()


def keras_logits(model, x):
    """The network's scores before its softmax (for squeezenet: pooled conv10 after its ReLU, as torchvision's)."""
    softmax = model.layers[-1]
    return keras.ops.convert_to_numpy(keras.Model(model.input, softmax.input)(x, training=False))


def gray_images(size, seed=1, batch=2):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 1)).astype("float32")


def rgb_images(size, seed=2, batch=2):
    return np.random.default_rng(seed).integers(0, 256, (batch, size, size, 3)).astype("float32")


def test_every_torchvision_network_is_tested():
    convertible = {name for name, entry in registry.ARCHITECTURES.items()
                   if any(f.convert_from for f in entry.imagenet)}
    assert set(NETWORKS) == set(torchvision_weights.SOURCES) == convertible
    for arch in NETWORKS:
        notop, top = torchvision_weights.converted_files(arch)
        assert (notop.file_name, top.file_name) == (f"{arch}_imagenet_notop.weights.h5", f"{arch}_imagenet.weights.h5")


@pytest.fixture(scope="module", params=list(NETWORKS))
def converted(request, tmp_path_factory):
    """(arch, torch state dict, folder with the converted files): the checkpoint saved, read and converted."""
    arch = request.param
    state_dict = NETWORKS[arch][0]()
    folder = tmp_path_factory.mktemp(arch)
    checkpoint = folder / f"{arch}-random.pth"
    torch.save(state_dict, checkpoint)
    # The tool's path in-process; its flags clash with octtl.train's --arch, so the CLI runs in a subprocess below.
    paths = torchvision_weights.write(arch, torchvision_weights.read_checkpoint(arch, str(checkpoint)),
                                      str(folder / "weights"))
    assert sorted(os.listdir(folder / "weights")) == sorted(os.path.basename(p) for p in paths)
    return arch, state_dict, folder / "weights"


def test_converted_network_matches_torch(converted):
    arch, state_dict, weights_dir = converted
    size = registry.get(arch).input_size
    model = models.build(arch, num_classes=1000, weights="imagenet", weights_dir=str(weights_dir),
                         preprocess="backbone")

    # Gray B-scans as octtl feeds them (0..255, the network's own scaling) against torchvision's usual input.
    gray = gray_images(size)
    expected = torch_logits(arch, state_dict, np.repeat(gray, 3, axis=-1))
    assert 1 < np.abs(expected).max() < 100  # values that make 1e-4 a real test
    np.testing.assert_allclose(keras_logits(model, gray), expected, rtol=0, atol=TOLERANCE)

    # Colour images too, so that a channel mix-up in the first convolution cannot hide behind gray input.
    rgb = rgb_images(size)
    top = torchvision_weights.converted_files(arch)[1]
    scale, offset = scaling.BACKBONE_SCALING[top.preprocess or registry.get(arch).preprocess]
    network = keras.Model(model.get_layer(scaling.INPUT_SCALING).output, model.layers[-1].input)
    actual = keras.ops.convert_to_numpy(network((rgb * scale + offset).astype("float32"), training=False))
    np.testing.assert_allclose(actual, torch_logits(arch, state_dict, rgb), rtol=0, atol=TOLERANCE)


def test_no_top_file_serves_the_head_swap(converted):
    arch, state_dict, weights_dir = converted
    notop, _ = torchvision_weights.converted_files(arch)
    assert pretrained.resolve(arch, "imagenet", weights_dir=str(weights_dir)).path == str(weights_dir / notop.file_name)
    with h5py.File(weights_dir / notop.file_name, "r") as f:
        stored = sum(1 for group in f["layers"].values() if "vars" in group and len(group["vars"]))
    classifier = registry.get(arch).classifier
    full = models.build(arch, num_classes=1000, weights="imagenet", weights_dir=str(weights_dir))
    assert stored == len([layer for layer in full.layers if layer.weights and layer.name != classifier])

    swapped = models.build(arch, weights="imagenet", weights_dir=str(weights_dir))
    x = gray_images(registry.get(arch).input_size, batch=1) / 127.5 - 1
    features = [keras.ops.convert_to_numpy(keras.Model(m.input, m.get_layer(name).input)(x, training=False))
                for m, name in ((full, classifier), (swapped, models.HEAD))]
    np.testing.assert_allclose(features[0], features[1], rtol=0, atol=1e-6)


def test_alexnet_fc6_takes_torch_channel_first_flatten():
    state_dict = {k: v.numpy() for k, v in alexnet_state_dict(seed=3).items()}
    network = models.build("alexnet", num_classes=1000)
    fc6 = torchvision_weights.convert("alexnet", state_dict, network)["fc6"][0]
    torch_rows = state_dict["classifier.1.weight"].T  # row c*36 + h*6 + w
    for h, w, c in [(0, 0, 1), (2, 5, 17), (5, 3, 255)]:
        np.testing.assert_array_equal(fc6[(h * 6 + w) * 256 + c], torch_rows[c * 36 + h * 6 + w])


def test_squeezenet_takes_both_imagenet_sources(tmp_path):
    state_dict = squeezenet_state_dict(seed=4)
    notop_path, _ = torchvision_weights.write("squeezenet", {k: v.numpy() for k, v in state_dict.items()},
                                              str(tmp_path / "torchvision"))
    sources = {"torchvision": notop_path, "keras": str(SQUEEZENET_H5)}
    built = {name: models.build("squeezenet", weights=path) for name, path in sources.items()}
    # One octtl network: the same layers with the same weight shapes take either file.
    structure = [[(layer.name, type(layer), tuple(w.shape for w in layer.weights)) for layer in m.layers]
                 for m in built.values()]
    assert structure[0] == structure[1]
    conv1 = {name: m.get_layer("conv1").get_weights()[0] for name, m in built.items()}
    np.testing.assert_array_equal(conv1["torchvision"], state_dict["features.0.weight"].numpy().transpose(2, 3, 1, 0))
    with h5py.File(SQUEEZENET_H5, "r") as f:
        np.testing.assert_array_equal(conv1["keras"], f["conv1/uniform1"])
    # Each source brings its own input scaling: Caffe's mean pixel, torchvision's mean/std.
    weights_dir = tmp_path / "both"
    shutil.copytree(tmp_path / "torchvision", weights_dir)
    shutil.copyfile(SQUEEZENET_H5, weights_dir / registry.get("squeezenet").imagenet[0].file_name)
    for num_classes, family in ((2, "caffe"), (1000, "torch")):  # the Keras file is preferred but has no conv10
        model = models.build("squeezenet", num_classes=num_classes, weights="imagenet", weights_dir=str(weights_dir),
                             preprocess="backbone", image_size=64)
        layer = model.get_layer(scaling.INPUT_SCALING).get_config()
        np.testing.assert_allclose(layer["offset"], scaling.BACKBONE_SCALING[family][1])


@pytest.mark.parametrize("arch", list(NETWORKS))
def test_missing_files_error_gives_the_import_command(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pretrained.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("must not download"))

    def no_network(url, path):
        raise OSError(f"<urlopen error [Errno -3] Temporary failure in name resolution> ({url})")

    monkeypatch.setattr(pretrained, "download_checkpoint", no_network)
    checkpoint = tmp_path / "torch/hub/checkpoints" / os.path.basename(torchvision_weights.checkpoint_url(arch))
    command = f"python tools/import_torchvision_weights.py --arch={arch} --checkpoint={checkpoint}"
    assert pretrained.import_command(arch) == command
    # squeezenet's Keras file serves the head swap; only its 1000-class build needs the conversion.
    said = []
    with pytest.raises(WeightsError) as error:
        models.build(arch, num_classes=1000, weights=pretrained.resolve(
            arch, "imagenet", num_classes=1000, weights_dir=str(tmp_path / "weights"), say=said.append))
    message = str(error.value)
    assert f"`{command}`" in message and f"put it at {checkpoint}" in message
    assert "\n" not in message and said == [
        f"weights: downloading torchvision's {arch} checkpoint {torchvision_weights.checkpoint_url(arch)}"]


def test_imagenet_converts_a_cached_checkpoint_on_first_use(tmp_path, monkeypatch):
    """torch installed and the checkpoint in torch's cache: --weights=imagenet converts it once, in one line."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pretrained.WEIGHTS_DIR_ENV, raising=False)
    state_dict = resnet18_state_dict(seed=5)
    checkpoint = pretrained.torch_hub_checkpoint(torchvision_weights.checkpoint_url("resnet18"))
    os.makedirs(os.path.dirname(checkpoint))
    torch.save(state_dict, checkpoint)
    # A made-up state dict cannot carry the sha256 prefix torchvision's file name promises; that check has its own test.
    monkeypatch.setattr(torchvision_weights, "_check_name", lambda arch, path: None)
    said = []
    weights = pretrained.resolve("resnet18", "imagenet", say=said.append)
    assert weights.path == str(tmp_path / "keras/models/resnet18_imagenet_notop.weights.h5")
    assert weights.scaling == "torch" and len(said) == 1 and said[0].startswith("weights: converting torchvision's")
    model = models.build("resnet18", weights=weights, image_size=32)
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0],
                                  state_dict["conv1.weight"].numpy().transpose(2, 3, 1, 0))
    said.clear()
    assert pretrained.resolve("resnet18", "imagenet", say=said.append).path == weights.path and not said


def run_tool(*args):
    return run_main(import_torchvision_weights, *args)


def test_the_tool_converts_a_wrapped_checkpoint_into_loadable_files(tmp_path):
    state_dict = resnet18_state_dict(seed=5)
    checkpoint = tmp_path / "resnet18-finetuned.pth"
    torch.save({"state_dict": state_dict, "epoch": 3}, checkpoint)  # a training script's wrapped state dict
    output_dir = tmp_path / "out"
    code, out, err = run_tool("--arch=resnet18", f"--checkpoint={checkpoint}", f"--output_dir={output_dir}")
    assert code == 0, err
    notop, top = (output_dir / f.file_name for f in torchvision_weights.converted_files("resnet18"))
    assert f"-> {notop}, {top}" in out and f"--weights_dir={output_dir}" in out
    assert sorted(output_dir.iterdir()) == sorted([notop, top])

    model = models.build("resnet18", num_classes=1000, weights="imagenet", weights_dir=str(output_dir),
                         preprocess="backbone", image_size=64)
    gray = gray_images(64)
    np.testing.assert_allclose(keras_logits(model, gray), torch_logits("resnet18", state_dict, np.repeat(gray, 3, -1)),
                               rtol=0, atol=TOLERANCE)


def test_tool_lists_leftovers_in_one_line_and_writes_nothing(tmp_path):
    state_dict = squeezenet_state_dict(seed=6)
    state_dict["features.13.squeeze.weight"] = state_dict.pop("features.12.squeeze.weight")
    state_dict["classifier.1.bias"] = torch.zeros(10)
    checkpoint = tmp_path / "squeezenet-edited.pth"
    torch.save(state_dict, checkpoint)
    output_dir = tmp_path / "out"
    code, out, _ = run_tool("--arch=squeezenet", f"--checkpoint={checkpoint}", f"--output_dir={output_dir}")
    assert out == "" and code == (
        f"import_torchvision_weights: error: --checkpoint={checkpoint}: not a torchvision squeezenet state dict: "
        "checkpoint tensors no layer takes: features.13.squeeze.weight; layer weights the checkpoint lacks: "
        "features.12.squeeze.weight (layer fire9_squeeze1x1); shapes that differ: classifier.1.bias is (10,), "
        "layer conv10 needs (1000,)")
    assert not output_dir.exists() or not any(output_dir.iterdir())


def test_googlenet_drops_only_the_auxiliary_classifiers():
    state_dict = {k: v.numpy() for k, v in googlenet_state_dict(seed=7).items()}
    network = models.build("googlenet", num_classes=1000, image_size=32)
    converted = torchvision_weights.convert("googlenet", state_dict, network)
    taken = sum(len(arrays) for arrays in converted.values())
    assert taken == len(network.weights)
    dropped = [k for k in state_dict if k.startswith(("aux1.", "aux2.")) or k.endswith("num_batches_tracked")]
    assert taken + len(dropped) == len(state_dict)
    del state_dict["conv1.bn.running_var"]
    state_dict["fc.extra"] = np.zeros(3)
    with pytest.raises(torchvision_weights.ConversionError, match=r"takes: fc\.extra;.*lacks: conv1\.bn\.running_var"):
        torchvision_weights.convert("googlenet", state_dict, network)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("text", "not a torch checkpoint"),
    ("tensor", "not a state dict"),
    ("other_network", "that is torchvision's alexnet checkpoint, not resnet18's"),
    ("bad_hash", "its sha256 starts with .*, not f37072fd as its name says"),
])
def test_bad_checkpoints_are_named(case, message, tmp_path):
    names = {"other_network": "alexnet-owt-7be5be79.pth", "bad_hash": "resnet18-f37072fd.pth"}
    path = tmp_path / names.get(case, "checkpoint.pth")
    if case == "text":
        path.write_text("not a checkpoint")
    elif case == "tensor":
        torch.save(torch.zeros(3), path)
    elif case != "missing":
        torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(torchvision_weights.CheckpointError, match=f"^{re.escape(str(path))}: {message}"):
        torchvision_weights.read_checkpoint("resnet18", str(path))


def test_without_torch_the_extra_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` meets where it is not installed
    with pytest.raises(torchvision_weights.CheckpointError, match=r"pip install 'octtl\[convert\]'"):
        torchvision_weights.read_checkpoint("resnet18", str(tmp_path / "resnet18.pth"))
