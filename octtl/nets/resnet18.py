"""ResNet-18 after torchvision's `resnet18` (BasicBlock, [2, 2, 2, 2]).

Every weighted layer is named after its torchvision module path through octtl.nets.loading.layer_name
(`layer2.0.downsample.0` -> `layer2_0_downsample_0`: Keras' torch backend refuses `.`; `fc`, ...), so a torchvision
state dict maps onto it by name: Conv2d (out, in, h, w) -> (h, w, in, out), Linear (out, in) -> (in, out),
BatchNorm weight/bias/running_mean/running_var -> gamma/beta/moving_mean/moving_variance.
"""

from keras import layers

from octtl.nets.loading import layer_name

CLASSIFIER = "fc"


def _path(block, module):
    """The layer of `module` in `block` (`layer2.0`): torchvision's module path as a Keras name."""
    return layer_name(f"{block}.{module}")


def _batch_norm(name):
    # torch's defaults: eps 1e-5 and momentum 0.1 (Keras counts momentum the other way round).
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv(x, filters, kernel, stride, name):
    if stride > 1 and kernel > 1:
        # torch pads both sides; Keras "same" pads only the bottom/right when striding, shifting the grid.
        x = layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
        padding = "valid"
    else:
        padding = "same"
    return layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False, name=name)(x)


def _basic_block(x, filters, stride, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv(x, filters, 1, stride, _path(name, "downsample.0"))
        shortcut = _batch_norm(_path(name, "downsample.1"))(shortcut)
    y = _conv(x, filters, 3, stride, _path(name, "conv1"))
    y = _batch_norm(_path(name, "bn1"))(y)
    y = layers.ReLU(name=_path(name, "relu1"))(y)
    y = _conv(y, filters, 3, 1, _path(name, "conv2"))
    y = _batch_norm(_path(name, "bn2"))(y)
    y = layers.Add(name=_path(name, "add"))([y, shortcut])
    return layers.ReLU(name=_path(name, "relu2"))(y)


def build(x, classes=1000):
    """Adds ResNet-18 to a 3-channel image tensor.

    Args:
        x: (batch, size, size, 3) Keras tensor, size >= 32 (224 native).
        classes: Width of fc.

    Returns:
        The softmax output tensor; `CLASSIFIER` names its last learnable layer.
    """
    x = _conv(x, 64, 7, 2, "conv1")
    x = _batch_norm("bn1")(x)
    x = layers.ReLU(name="relu")(x)
    # Zero padding equals torch's -inf padding here because the input is post-ReLU (>= 0).
    x = layers.ZeroPadding2D(1, name="maxpool_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    for stage, filters in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"layer{stage}.{block}")
    x = layers.GlobalAveragePooling2D(name="avgpool")(x)
    x = layers.Dense(classes, name=CLASSIFIER)(x)
    return layers.Activation("softmax", dtype="float32", name="prob")(x)
