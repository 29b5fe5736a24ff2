"""Layer names of octtl's own networks (octtl.nets.loading.layer_name): no "." for Keras' torch backend, and files
saved under the former dotted names load into today's networks with the same outputs (issue #26).

Until issue #26 squeezenet, resnet18 and googlenet named layers after dotted paths (`fire2.squeeze1x1`,
`layer4.1.conv2`), which Keras' torch backend refuses: it keys each layer's variables by path in a
torch.nn.ParameterDict, and torch allows no "." in a parameter name. `old_checkpoints` rebuilds those networks
exactly by giving the nets the former rule, and saves them as runs of that time did.
"""

import importlib.util
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import hide_tensorflow
from conftest import REPO
from octtl.nets import googlenet, loading, models, resnet18, squeezenet

SIZE = 32
NETS = {"squeezenet": squeezenet, "resnet18": resnet18, "googlenet": googlenet}
# Each network's Grad-CAM block (its last convolutional one), as the pre-#26 networks named it.
LAST_BLOCK = {"squeezenet": "fire9.concat", "resnet18": "layer4.1.relu2", "googlenet": "inception5b.concat"}
KINDS = {"keras": "best.keras", "weights": "model.weights.h5", "legacy": "model.h5"}  # by key, key, name
# `.weights.h5` loads as `.keras` does (the same file inside), so one network shows it.
CASES = [(arch, kind) for arch in NETS for kind in KINDS if kind != "weights" or arch == "squeezenet"]
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword",
                                        "ignore:You are saving your model as an HDF5 file")


def _former_layer_name(path):
    """The rule before issue #26: torchvision's module paths as they are, Caffe's `fire2/squeeze1x1` with a "."."""
    return path.replace("/", ".")


def images(batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, SIZE, SIZE, 1)).astype("float32")


def predict(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


@pytest.mark.parametrize("path, name", [
    ("fire2/squeeze1x1", "fire2_squeeze1x1"),  # Caffe's, in the Keras SqueezeNet release
    ("fire2.squeeze1x1", "fire2_squeeze1x1"),  # octtl's before issue #26
    ("layer4.1.downsample.0", "layer4_1_downsample_0"),  # torchvision's module path
    ("inception4a.branch2.1.conv", "inception4a_branch2_1_conv"),
    ("fire2_squeeze1x1", "fire2_squeeze1x1"),  # today's names stay as they are
    ("conv10", "conv10"),
])
def test_one_rule_maps_paths_and_former_names_to_layer_names(path, name):
    assert loading.layer_name(path) == name


@pytest.fixture(scope="module")
def old_checkpoints(tmp_path_factory):
    """A folder with each pre-#26 network (2 classes, 32 px) saved as `CASES` need (`KINDS`), its predictions on
    `images()` (`<arch>.npy`) and those images; squeezenet holds its ImageNet weights, as a fine-tuned run would."""
    folder = tmp_path_factory.mktemp("old-names")
    x = images()
    np.save(folder / "images.npy", x)
    imagenet = models.build("squeezenet", weights="imagenet", image_size=SIZE, preprocess="paper")
    with pytest.MonkeyPatch.context() as patch:
        for net in NETS.values():
            patch.setattr(net, "layer_name", _former_layer_name)
        for arch in NETS:
            old = models.build(arch, image_size=SIZE)
            assert old.get_layer(LAST_BLOCK[arch])  # the dotted names, as they were
            if arch == "squeezenet":
                old.set_weights(imagenet.get_weights())
            (folder / arch).mkdir()
            old.save(folder / arch / KINDS["keras"])
            if (arch, "weights") in CASES:
                old.save_weights(folder / arch / KINDS["weights"])
            old.save(folder / arch / KINDS["legacy"])  # Keras 2's format, layers by name
            np.save(folder / f"{arch}.npy", predict(old, x))
    return folder


@pytest.mark.parametrize("arch, kind", CASES)
def test_an_old_name_file_loads_with_the_same_outputs(arch, kind, old_checkpoints):
    model = models.build(arch, weights=str(old_checkpoints / arch / KINDS[kind]), image_size=SIZE)
    np.testing.assert_array_equal(predict(model, np.load(old_checkpoints / "images.npy")),
                                  np.load(old_checkpoints / f"{arch}.npy"))


@pytest.mark.parametrize("arch", list(NETS))
def test_new_names_and_either_spelling_finds_a_layer(arch, old_checkpoints):
    old_name, new_name = LAST_BLOCK[arch], loading.layer_name(LAST_BLOCK[arch])
    # predict loads a best.keras as Keras saved it: the dotted names stay, and so do the predictions.
    old = keras.saving.load_model(old_checkpoints / arch / KINDS["keras"], compile=False)
    np.testing.assert_array_equal(predict(old, np.load(old_checkpoints / "images.npy")),
                                  np.load(old_checkpoints / f"{arch}.npy"))
    new = models.build(arch, image_size=SIZE, trainable_from=old_name)
    assert [layer.name for layer in new.layers if loading.layer_name(layer.name) != layer.name] == []  # no "."
    assert [loading.get_layer(m, name).name for m in (old, new) for name in (old_name, new_name)] == [
        old_name, old_name, new_name, new_name]
    assert new.layers[new.layers.index(new.get_layer(new_name)) - 1].trainable is False
    with pytest.raises(ValueError, match="not a layer"):
        loading.get_layer(new, "fire10.concat")


# Keras on torch, TensorFlow not importable: each pre-#26 best.keras into today's network, a forward pass, one
# training step; and squeezenet's ImageNet file (Caffe's names, by the rule) on the same layers.
_TORCH = hide_tensorflow.PRELUDE + """
import json
import keras
import numpy as np
from octtl.nets import models
folder = sys.argv[1]
x = np.load(f"{folder}/images.npy")
report = {"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules}
for arch in ("squeezenet", "resnet18", "googlenet"):
    model = models.build(arch, weights=f"{folder}/{arch}/best.keras", image_size=x.shape[1])
    np.save(f"{folder}/{arch}-torch.npy", keras.ops.convert_to_numpy(model(x, training=False)))
    if arch == "squeezenet":
        imagenet = models.build(arch, weights="imagenet", image_size=x.shape[1], preprocess="paper")
        report["imagenet"] = all(np.array_equal(a, b) for a, b in zip(imagenet.get_weights()[:-2],
                                                                       model.get_weights()[:-2], strict=True))
    model.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy")
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    loss = float(model.train_on_batch(x, np.arange(len(x)) % 2))
    moved = sum(not np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, model.trainable_weights))
    report[arch] = {"loss_finite": bool(np.isfinite(loss)), "moved": moved == len(before)}
print(json.dumps(report))
"""


def test_old_checkpoints_load_and_train_on_torch(old_checkpoints):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _TORCH, str(old_checkpoints)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    step = {"loss_finite": True, "moved": True}
    assert report == {"backend": "torch", "tensorflow": False, "imagenet": True,
                      **{arch: step for arch in NETS}}
    for arch in NETS:
        np.testing.assert_allclose(np.load(old_checkpoints / f"{arch}-torch.npy"),
                                   np.load(old_checkpoints / f"{arch}.npy"), rtol=0, atol=1e-5)
