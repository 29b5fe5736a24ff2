"""The backbone scaling layer maps 0..255 gray to each weight family's expected inputs."""

import keras
import numpy as np
import pytest

from octtl import architectures, models


@pytest.mark.parametrize("arch, expected", [
    ("resnet18", lambda x: (x / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])),
    ("squeezenet", lambda x: x - np.array([103.939, 116.779, 123.68])),
    ("mobilenetv2", lambda x: x / 127.5 - 1.0),
])
def test_backbone_scaling(arch, expected):
    assert architectures.get(arch).preprocess in models.BACKBONE_SCALING
    model = models.build(arch, image_size=64, preprocess="backbone")
    scaled = keras.Model(model.input, model.get_layer("backbone_scaling").output)
    gray = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(scaled.predict(gray, verbose=0), expected(np.repeat(gray, 3, axis=-1)),
                               rtol=1e-5, atol=1e-4)


def test_paper_preprocess_adds_no_layer():
    names = [layer.name for layer in models.build("squeezenet", image_size=64).layers]
    assert "backbone_scaling" not in names
    with pytest.raises(ValueError, match="preprocess must be one of"):
        models.build("squeezenet", image_size=64, preprocess="imagenet")
