"""Where weights come from (octtl/nets/pretrained.py): search order, files under other names, packaged, fetched, converted."""

import shutil

import h5py
import keras
import numpy as np
import pytest

from conftest import SQUEEZENET_H5
from octtl.nets import registry
from octtl.nets import models
from octtl.nets import pretrained

REGISTRY_NAME = registry.get("squeezenet").imagenet[0].file_name


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty Keras and torch caches; every download fails the way it does without network."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(pretrained.WEIGHTS_DIR_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise Exception("URL fetch failure on https://example: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", no_network)
    monkeypatch.setattr(pretrained, "download_checkpoint", no_network)
    return tmp_path


def test_the_packaged_squeezenet_serves_offline(offline):
    weights = pretrained.resolve("squeezenet", "imagenet")
    assert weights.path == str(pretrained.PACKAGED_DIR / REGISTRY_NAME)
    assert weights.scaling == "caffe" and "packaged with octtl" in weights.describe()
    assert (pretrained.PACKAGED_DIR / "LICENSE.squeezenet").read_text().startswith("MIT License")
    model = models.build("squeezenet", weights=weights, image_size=32)
    with h5py.File(SQUEEZENET_H5, "r") as f:
        np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], f["conv1/uniform1"])


@pytest.mark.parametrize("place", ["weights_dir", "env", "keras_cache"])
def test_search_order_puts_the_users_folders_first(place, offline, monkeypatch):
    directory = offline / ("keras/models" if place == "keras_cache" else "weights")
    directory.mkdir(parents=True)
    shutil.copyfile(SQUEEZENET_H5, directory / REGISTRY_NAME)
    if place == "env":
        monkeypatch.setenv(pretrained.WEIGHTS_DIR_ENV, str(directory))
    weights_dir = str(directory) if place == "weights_dir" else None
    assert pretrained.resolve("squeezenet", "imagenet", weights_dir=weights_dir).path == str(
        directory / REGISTRY_NAME)


def test_a_known_file_under_another_name_is_found_and_only_candidates_are_hashed(offline, monkeypatch):
    directory = offline / "weights"
    directory.mkdir()
    shutil.copyfile(SQUEEZENET_H5, directory / "squeezenet_v1.1_imagenet_notop.h5")
    (directory / "other.h5").write_bytes(b"x" * 1000)  # not the registry's size: never hashed
    hashed = []
    digests = pretrained._digests
    monkeypatch.setattr(pretrained, "_digests", lambda path: hashed.append(path) or digests(path))
    weights = pretrained.resolve("squeezenet", "imagenet", weights_dir=str(directory))
    assert weights.path == str(directory / "squeezenet_v1.1_imagenet_notop.h5")
    assert hashed == [weights.path]


def test_a_file_with_the_registry_name_and_other_bytes_fails_its_checksum(offline):
    directory = offline / "weights"
    directory.mkdir()
    models.build("squeezenet", image_size=32).save(str(directory / REGISTRY_NAME))
    with pytest.raises(pretrained.WeightsError, match="checksum"):
        pretrained.resolve("squeezenet", "imagenet", weights_dir=str(directory))


@pytest.mark.parametrize("arch", ["inceptionv3", "vgg16"])
def test_offline_download_failure_says_what_to_put_where(arch, offline):
    wanted = registry.get(arch).imagenet[0].file_name
    with pytest.raises(pretrained.WeightsError, match="URL fetch failure") as error:
        pretrained.resolve(arch, "imagenet", weights_dir=str(offline / "weights"))
    message = str(error.value)
    assert wanted in message and str(offline / "weights") in message and "--weights=PATH" in message
    assert "\n" not in message


@pytest.mark.parametrize("arch", ["alexnet", "resnet18", "googlenet"])
def test_torchvision_nets_without_torch_name_the_command(arch, offline, monkeypatch):
    monkeypatch.setattr(pretrained, "have_torch", lambda: False)
    with pytest.raises(pretrained.WeightsError) as error:
        pretrained.resolve(arch, "imagenet")
    message = str(error.value)
    assert f"`{pretrained.import_command(arch)}`" in message and "pip install 'octtl[convert]'" in message
    assert f"--checkpoint={offline / 'torch/hub/checkpoints'}" in message and "\n" not in message


def test_torchvision_nets_with_torch_but_no_checkpoint_say_where_to_put_it(offline, monkeypatch):
    monkeypatch.setattr(pretrained, "have_torch", lambda: True)
    with pytest.raises(pretrained.WeightsError, match="cannot download https://download.pytorch.org") as error:
        pretrained.resolve("resnet18", "imagenet", say=lambda line: None)
    assert f"`{pretrained.import_command('resnet18')}`" in str(error.value)


def test_squeezenet_1000_classes_needs_the_converted_file(offline, monkeypatch):
    monkeypatch.setattr(pretrained, "have_torch", lambda: False)
    with pytest.raises(pretrained.WeightsError, match="import_torchvision_weights.py --arch=squeezenet"):
        pretrained.resolve("squeezenet", "imagenet", num_classes=1000)


def test_no_weights_and_missing_files():
    assert pretrained.resolve("squeezenet", "none") == pretrained.Weights("none", None, None, None)
    with pytest.raises(pretrained.WeightsError, match="--weights=/nonexistent/w.h5: no such file"):
        pretrained.resolve("squeezenet", "/nonexistent/w.h5")
    with pytest.raises(pretrained.WeightsError, match="tiny has no ImageNet weights"):
        pretrained.resolve("tiny", "imagenet")
