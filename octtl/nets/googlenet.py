"""GoogLeNet (Inception v1) after torchvision's `googlenet`, without the auxiliary classifiers.

torchvision's version differs from the Caffe original the paper's MATLAB model came from: every convolution
is followed by batch norm (eps 1e-3) and the "5x5" branches use 3x3 kernels (pytorch/vision#906). That makes it
6.6 M parameters instead of 7.0 M, and it is the variant whose ImageNet weights are obtainable. The auxiliary
classifiers only exist during ImageNet training and are dropped, as torchvision does for pretrained models.

Weighted layers are named after torchvision module paths (`inception4a.branch2.1.conv`, `...bn`, `fc`) through
octtl.nets.loading.layer_name (`inception4a_branch2_1_conv`: Keras' torch backend refuses `.`), so a state dict
maps by name. The torchvision weights expect [-1, 1] inputs (its `transform_input` converts ImageNet-normalised
inputs to that range before the first convolution).
"""

import math

from keras import layers

from octtl.nets.loading import layer_name

CLASSIFIER = "fc"

# (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) per inception block, as in torchvision.
_INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


def _ceil_mode_padding(size, pool, stride):
    """Keras padding that reproduces torch's `MaxPool2d(pool, stride, ceil_mode=True)` on `size` pixels."""
    ceil_out = math.ceil((size - pool) / stride) + 1
    if (ceil_out - 1) * stride >= size:
        ceil_out -= 1  # torch drops a last window that would start in the padding
    if ceil_out == (size - pool) // stride + 1:
        return "valid"
    same_pad = max((math.ceil(size / stride) - 1) * stride + pool - size, 0)
    if math.ceil(size / stride) == ceil_out and same_pad // 2 == 0:
        return "same"  # "same" then pads only the bottom/right, like ceil mode
    raise ValueError(f"No Keras padding matches ceil-mode pooling of {size} px with pool {pool}/{stride}")


def max_pool_ceil(x, pool, stride, name):
    """torch's `MaxPool2d(pool, stride, ceil_mode=True)` as a Keras layer on square `x`; SqueezeNet uses it too."""
    padding = {_ceil_mode_padding(size, pool, stride) for size in x.shape[1:3]}
    if len(padding) != 1:
        raise ValueError(f"{name}: height and width {x.shape[1:3]} need different paddings; use square inputs")
    return layers.MaxPooling2D(pool, strides=stride, padding=padding.pop(), name=name)(x)


def _path(module, part):
    """The layer of `part` in `module` (`inception4a.branch2.1`): torchvision's module path as a Keras name."""
    return layer_name(f"{module}.{part}")


def _basic_conv(x, filters, kernel, name, stride=1):
    """torchvision's BasicConv2d: bias-free conv, batch norm, ReLU."""
    if stride > 1:
        # torch pads both sides; Keras "same" pads only the bottom/right when striding, shifting the grid.
        x = layers.ZeroPadding2D(kernel // 2, name=_path(name, "pad"))(x)
        padding = "valid"
    else:
        padding = "same"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=_path(name, "conv"))(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3, name=_path(name, "bn"))(x)
    return layers.ReLU(name=_path(name, "relu"))(x)


def _inception(x, name, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
    branch1 = _basic_conv(x, ch1x1, 1, f"{name}.branch1")
    branch2 = _basic_conv(x, ch3x3red, 1, f"{name}.branch2.0")
    branch2 = _basic_conv(branch2, ch3x3, 3, f"{name}.branch2.1")
    branch3 = _basic_conv(x, ch5x5red, 1, f"{name}.branch3.0")
    branch3 = _basic_conv(branch3, ch5x5, 3, f"{name}.branch3.1")  # 3x3, see module docstring
    branch4 = layers.MaxPooling2D(3, strides=1, padding="same", name=_path(name, "branch4.0"))(x)
    branch4 = _basic_conv(branch4, pool_proj, 1, f"{name}.branch4.1")
    return layers.Concatenate(name=_path(name, "concat"))([branch1, branch2, branch3, branch4])


def build(x, classes=1000):
    """Adds GoogLeNet to a 3-channel image tensor.

    Args:
        x: (batch, size, size, 3) Keras tensor, size >= 32 (224 native).
        classes: Width of fc.

    Returns:
        The softmax output tensor; `CLASSIFIER` names its last learnable layer.
    """
    x = _basic_conv(x, 64, 7, "conv1", stride=2)
    x = max_pool_ceil(x, 3, 2, "maxpool1")
    x = _basic_conv(x, 64, 1, "conv2")
    x = _basic_conv(x, 192, 3, "conv3")
    x = max_pool_ceil(x, 3, 2, "maxpool2")
    for name, channels in _INCEPTION.items():
        x = _inception(x, name, *channels)
        if name == "inception3b":
            x = max_pool_ceil(x, 3, 2, "maxpool3")
        elif name == "inception4e":
            x = max_pool_ceil(x, 2, 2, "maxpool4")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    x = layers.Dense(classes, name=CLASSIFIER)(x)
    return layers.Activation("softmax", dtype="float32", name="prob")(x)
