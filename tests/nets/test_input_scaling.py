"""Input scaling: every model maps 0..255 gray itself; `auto` follows the weights actually loaded."""

import shutil
import keras
import numpy as np
import pytest
from absl import flags

from conftest import REPO, SQUEEZENET_H5
from octtl import train
from octtl.nets import models
from octtl.nets import scaling
from octtl.nets import pretrained  # noqa: F401  (train defines the flags)


def _scaled(model, gray):
    return keras.Model(model.input, model.get_layer(scaling.INPUT_SCALING).output).predict(gray, verbose=0)


@pytest.mark.parametrize("arch, expected", [
    ("resnet18", lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
    ("squeezenet", lambda x: x - np.array([103.939, 116.779, 123.68])),
    ("mobilenetv2", lambda x: x / 127.5 - 1.0),
])
def test_backbone_scaling_feeds_what_the_weights_were_trained_on(arch, expected):
    model = models.build(arch, image_size=64, preprocess="backbone")
    gray = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(_scaled(model, gray), expected(np.repeat(gray, 3, axis=-1)), rtol=1e-5, atol=1e-4)


def test_paper_scaling_maps_0_to_minus_1_and_255_to_1():
    model = models.build("squeezenet", image_size=32, preprocess="paper")
    gray = np.zeros((3, 32, 32, 1), np.float32)
    gray[1], gray[2] = 255.0, 127.5
    scaled = _scaled(model, gray)
    # Rescaling computes x * (1/127.5) - 1: exact at the ends, within a float ulp between.
    assert np.all(scaled[0] == -1.0) and np.all(scaled[1] == 1.0)
    np.testing.assert_allclose(scaled[2], 0.0, atol=1e-6)


def test_auto_follows_the_weights():
    random = pretrained.resolve("squeezenet", "none")
    packaged = pretrained.resolve("squeezenet", "imagenet")
    assert packaged.imagenet is not None and packaged.scaling == "caffe"
    assert scaling.resolve_preprocess("auto", packaged, "squeezenet") == scaling.InputScaling("backbone", "caffe")
    assert scaling.resolve_preprocess("auto", random, "squeezenet") == scaling.InputScaling("paper", "tf")
    # Explicit choices are exact, whatever the weights.
    assert scaling.resolve_preprocess("paper", packaged, "squeezenet").preprocess == "paper"
    assert scaling.resolve_preprocess("backbone", random, "squeezenet") == scaling.InputScaling("backbone", "caffe")
    with pytest.raises(ValueError, match="preprocess must be one of"):
        scaling.resolve_preprocess("imagenet", random, "squeezenet")


def test_a_known_file_under_any_name_is_imagenet_and_an_own_file_is_not(tmp_path):
    foreign = tmp_path / "squeezenet_v1.1_imagenet_notop.h5"  # the name ../shared gives it
    shutil.copyfile(SQUEEZENET_H5, foreign)
    renamed = pretrained.resolve("squeezenet", str(foreign))
    assert renamed.imagenet is not None and renamed.scaling == "caffe"
    own = tmp_path / "mine.weights.h5"
    models.build("squeezenet", image_size=32).save_weights(own)
    mine = pretrained.resolve("squeezenet", str(own))
    assert mine.imagenet is None and mine.scaling is None
    assert scaling.resolve_preprocess("auto", mine, "squeezenet").preprocess == "paper"


def test_mismatch_is_flagged_only_for_paper_on_caffe_weights():
    assert scaling.scaling_mismatch(scaling.InputScaling("paper", "tf"), "caffe") == pytest.approx(127.5)
    assert scaling.scaling_mismatch(scaling.InputScaling("backbone", "caffe"), "caffe") is None
    assert scaling.scaling_mismatch(scaling.InputScaling("paper", "tf"), "torch") is None  # about 2.2x
    assert scaling.scaling_mismatch(scaling.InputScaling("paper", "tf"), None) is None


@pytest.mark.parametrize("flagfile", ["paper_baseline.cfg", "paper_limited.cfg", "paper_sweep.cfg"])
def test_paper_flagfiles_resolve_to_paper_and_the_demo_to_auto(flagfile, monkeypatch):
    monkeypatch.chdir(REPO)  # flagfiles include each other by paths relative to the repository
    assert _preprocess_of(f"flags/{flagfile}") == "paper"
    assert _preprocess_of("flags/demo.cfg") == "auto"


def _preprocess_of(flagfile) -> str:
    """--preprocess as a flagfile (and the flagfiles it includes) leaves it: absl expands them, the last wins."""
    args = flags.FLAGS.read_flags_from_files([f"--flagfile={flagfile}"], force_gnu=True)
    values = [a.split("=", 1)[1] for a in args if a.startswith("--preprocess=")]
    return values[-1] if values else flags.FLAGS["preprocess"].default


def test_flag_default_is_auto():
    assert flags.FLAGS["preprocess"].default == "auto"
