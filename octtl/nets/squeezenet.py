"""SqueezeNet v1.1 after torchvision's `squeezenet1_1`, named like the Caffe/Keras release.

Layer names are the Caffe names of the DeepScale release (`conv1`, `fire2/squeeze1x1`, ..., `conv10`) through
octtl.nets.loading.layer_name (`fire2_squeeze1x1`: Keras 3 refuses `/`, its torch backend `.`), the rule by which
the ImageNet weights file for Keras (`squeezenet_weights_tf_dim_ordering_tf_kernels_notop.h5`) loads by name.
`TORCHVISION_NAMES` maps the weighted layers to torchvision's module paths for converting its checkpoint instead.

Max pools use torch's (and Caffe's) ceil mode, unlike the Keras release's floor-mode pools; the two differ on
odd feature-map sizes (56 -> 28 vs 27 at 227 px), and ceil mode is what the weights were trained with.
"""

from keras import layers

from octtl.nets.googlenet import max_pool_ceil
from octtl.nets.loading import layer_name

CLASSIFIER = "conv10"

# (squeeze, expand) filters of fire2..fire9; each expand branch (1x1 and 3x3) has `expand` filters.
_FIRES = {
    "fire2": (16, 64),
    "fire3": (16, 64),
    "fire4": (32, 128),
    "fire5": (32, 128),
    "fire6": (48, 192),
    "fire7": (48, 192),
    "fire8": (64, 256),
    "fire9": (64, 256),
}
_POOL_AFTER = {"conv1": "pool1", "fire3": "pool3", "fire5": "pool5"}


def _caffe(fire, part):
    """The layer of a fire module's `part`: Caffe's `fire2/squeeze1x1` as octtl writes it (`fire2_squeeze1x1`)."""
    return layer_name(f"{fire}/{part}")


_TORCHVISION_FIRE_PARTS = {"squeeze1x1": "squeeze", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}
TORCHVISION_NAMES = {
    "conv1": "features.0",
    **{
        _caffe(fire, part): f"features.{index}.{torch_part}"
        for fire, index in zip(_FIRES, (3, 4, 6, 7, 9, 10, 11, 12))
        for part, torch_part in _TORCHVISION_FIRE_PARTS.items()
    },
    "conv10": "classifier.1",
}


def _fire(x, name, squeeze, expand):
    x = layers.Conv2D(squeeze, 1, name=_caffe(name, "squeeze1x1"))(x)
    x = layers.ReLU(name=_caffe(name, "relu_squeeze1x1"))(x)
    left = layers.Conv2D(expand, 1, name=_caffe(name, "expand1x1"))(x)
    left = layers.ReLU(name=_caffe(name, "relu_expand1x1"))(left)
    right = layers.Conv2D(expand, 3, padding="same", name=_caffe(name, "expand3x3"))(x)
    right = layers.ReLU(name=_caffe(name, "relu_expand3x3"))(right)
    # The next squeeze's weights assume expand1x1 channels first.
    return layers.Concatenate(name=_caffe(name, "concat"))([left, right])


def build(x, classes=1000):
    """Adds SqueezeNet v1.1 to a 3-channel image tensor.

    Args:
        x: (batch, size, size, 3) Keras tensor, size >= 32 (227 native).
        classes: Filters of conv10, the 1x1 convolution that classifies.

    Returns:
        The softmax output tensor; `CLASSIFIER` names its last learnable layer.
    """
    x = layers.Conv2D(64, 3, strides=2, name="conv1")(x)
    x = layers.ReLU(name="relu_conv1")(x)
    x = max_pool_ceil(x, 3, 2, _POOL_AFTER["conv1"])
    for name, (squeeze, expand) in _FIRES.items():
        x = _fire(x, name, squeeze, expand)
        if name in _POOL_AFTER:
            x = max_pool_ceil(x, 3, 2, _POOL_AFTER[name])
    x = layers.Dropout(0.5, name="drop9")(x)
    x = layers.Conv2D(classes, 1, name=CLASSIFIER)(x)
    x = layers.ReLU(name="relu_conv10")(x)
    x = layers.GlobalAveragePooling2D(name="pool10")(x)
    return layers.Activation("softmax", dtype="float32", name="prob")(x)
