"""octtl.nets.head_init: the new head drawn by NumPy from the seed, and the same probabilities on every backend.

The cross-backend test is issue #26's acceptance check: before any training step, SqueezeNet with its ImageNet
weights and the NumPy head gives TensorFlow's validation probabilities within 1e-4 on JAX and on PyTorch, with
TensorFlow not importable there (records read by octtl.data.tfrecord and example_proto, B-scans decoded and
cropped by octtl.data.images). Each backend that is not installed is skipped.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import hide_tensorflow
from conftest import REPO, synthetic_records
from octtl.nets import head_init, models

SIZE = 96
SEED = 3


@pytest.mark.parametrize("shape", [(16, 2), (1, 1, 512, 2), (3, 3, 8, 5)])
def test_fans_are_keras_fans(shape):
    from keras.src.initializers.random_initializers import compute_fans

    assert head_init.fans(shape) == compute_fans(shape)


def test_the_draw_is_glorot_uniform_and_a_function_of_the_seed():
    kernel = head_init.glorot_uniform((1, 1, 512, 2), SEED)
    limit = math.sqrt(6 / (512 + 2))
    assert kernel.dtype == np.float32 and kernel.shape == (1, 1, 512, 2)
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
    assert abs(kernel.std() - limit / math.sqrt(3)) < 0.1 * limit  # a uniform's spread
    np.testing.assert_array_equal(kernel, head_init.glorot_uniform((1, 1, 512, 2), SEED))
    assert not np.array_equal(kernel, head_init.glorot_uniform((1, 1, 512, 2), SEED + 1))
    assert not np.array_equal(head_init.glorot_uniform((2, 2), -1), head_init.glorot_uniform((2, 2), 1))


@pytest.mark.parametrize("arch", ["tiny", "squeezenet"])  # a Dense head and SqueezeNet's 1x1 convolution
def test_initialise_head_sets_the_drawn_kernel_and_a_zero_bias(arch):
    model = models.build(arch, num_classes=2, image_size=32)
    before = [w.copy() for w in model.get_weights()]
    kernel = head_init.initialise_head(model, SEED)
    head = model.get_layer(models.HEAD)
    np.testing.assert_array_equal(np.asarray(head.kernel), kernel)
    assert not np.asarray(head.bias).any()
    after = model.get_weights()
    changed = [k for k, (a, b) in enumerate(zip(before, after)) if not np.array_equal(a, b)]
    assert len(changed) == 1  # the kernel only (the bias was zero already); the backbone is untouched


def test_a_model_without_a_new_head_is_refused():
    model = models.build("tiny", num_classes=1000, image_size=32)
    with pytest.raises(ValueError, match="no layer 'head'"):
        head_init.initialise_head(model, SEED)


# Run on another backend, TensorFlow not importable: read the shards, decode and crop, predict with the NumPy head.
_OTHER_BACKEND = hide_tensorflow.PRELUDE + """
import glob, json
import numpy as np
import keras
from octtl.data import example_proto, images, tfrecord
from octtl.nets import head_init, models
records, out, size, seed, mode = sys.argv[1:6]
crops = [images.crop(images.decode_png(example_proto.parse(payload)["image/encoded"][0]), int(size), mode)
         for path in sorted(glob.glob(records + "/bscans-*-of-*.tfrecord")) for payload in tfrecord.read(path)]
model = models.build("squeezenet", num_classes=2, weights="imagenet", image_size=int(size))
head_init.initialise_head(model, int(seed))
probabilities = np.asarray(model.predict(np.stack(crops), batch_size=8, verbose=0))
np.savez(out, crops=np.stack(crops), probabilities=probabilities)
print(json.dumps({"backend": keras.backend.backend(), "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def tensorflow_reference(tmp_path_factory):
    """Synthetic records, and TensorFlow's crops (octtl.data.pipeline) and probabilities with the NumPy head."""
    pytest.importorskip("tensorflow")
    from octtl.data import pipeline, records

    root = tmp_path_factory.mktemp("backends")
    folder = synthetic_records(root, volumes=2, bscans=6, height=248, width=256, seed=5)
    decoded = pipeline.decode(folder, records.read_metadata(folder), SIZE, "resize")
    model = models.build("squeezenet", num_classes=2, weights="imagenet", image_size=SIZE)
    head_init.initialise_head(model, SEED)
    return folder, decoded.images, np.asarray(model.predict(decoded.images, batch_size=8, verbose=0))


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_imagenet_squeezenet_with_the_numpy_head_gives_tensorflows_probabilities(backend, tensorflow_reference,
                                                                                  tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    folder, crops, expected = tensorflow_reference
    out = tmp_path / "out.npz"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", _OTHER_BACKEND, str(folder), str(out), str(SIZE), str(SEED),
                           "resize"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"backend": backend, "tensorflow": False}
    got = np.load(out)
    np.testing.assert_array_equal(got["crops"], crops)  # the same decoding and crop, pixel for pixel
    assert np.abs(got["probabilities"] - expected).max() < 1e-4
    assert expected[:, 1].std() > 1e-3  # the probabilities differ between B-scans: a real comparison
