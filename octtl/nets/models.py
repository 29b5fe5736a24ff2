"""Builds a Table I network with the paper's head swap (section II-A), its input scaling inside, weights loaded.

The head swap: the network's last learnable classification layer and its softmax are removed, every other
layer is kept as it was, and a new `num_classes`-wide layer of the same kind (Dense, or the 1x1 convolution
that classifies in SqueezeNet) is added with Glorot-uniform weights, followed by a float32 softmax.

Batch norm: pretrained networks keep their BatchNormalization layers frozen (`trainable = False`, so they run
in inference mode with the ImageNet statistics), as Keras' fine-tuning guidance advises: updating the moving
statistics from small fine-tuning batches destroys what the layers learned. Their gamma/beta stay fixed too;
every other layer trains. Randomly initialised networks train their batch norm normally. MATLAB, which the
paper used, updates the statistics instead; pass `freeze_batchnorm=False` for that.

Every model takes 0..255 gray and maps it itself (octtl.nets.scaling, the `input_scaling` layer). Weights are
loaded strictly, never partially (octtl.nets.loading).
"""

import keras
from keras import layers

from octtl.nets import registry

from octtl.nets import loading, pretrained, scaling as input_scaling  # `scaling` is build's local name
from octtl.nets.pretrained import IMAGENET_CLASSES

HEAD = "head"
HEAD_SOFTMAX = "head_softmax"
HEAD_SIGMOID = "head_sigmoid"  # the head's activation where each output is its own yes/no (fluid types)


def build(
    arch,
    num_classes=2,
    weights="none",
    image_size=None,
    weights_dir=None,
    trainable_from=None,
    freeze_batchnorm=None,
    preprocess="auto",
    activation="softmax",
    linear_head=False,
):
    """Builds a Table I network, head-swapped to `num_classes` unless that is ImageNet's 1000.

    Args:
        arch: A key of `octtl.nets.registry.ARCHITECTURES` (or the test-only networks).
        num_classes: Classes of the new head; 1000 keeps the whole ImageNet classifier instead.
        weights: 'imagenet', 'none' (random initialisation), the path of a `.weights.h5`, legacy Keras `.h5`
            or `.keras` file, or a `pretrained.Weights` already resolved.
        image_size: Square input size; defaults to the network's native one (Table I).
        weights_dir: Directory searched first for ImageNet files (see `octtl.nets.pretrained`).
        trainable_from: Name of the first trainable layer (`layer4_0_conv1`, or the former `layer4.0.conv1`:
            octtl.nets.loading.layer_name); the layers before it in `model.layers` (topological) order are
            frozen. None trains all.
        freeze_batchnorm: Freeze BatchNormalization layers (see module docstring); None freezes them exactly
            when weights are loaded.
        preprocess: 'auto', 'paper' or 'backbone' (octtl.nets.scaling.resolve_preprocess), or an `InputScaling`. The model
            always takes 0..255 gray and its first layer, `input_scaling`, maps it: to [-1, 1] ('paper') or to
            what the weights were trained on ('backbone').
        activation: The new head's: 'softmax' over the classes (the paper), or 'sigmoid', one independent
            probability per output (several answers per B-scan, such as the three fluid types).
        linear_head: Leave out a ReLU between the new head and its pooling (SqueezeNet's `relu_conv10`), so that
            the head is linear in the backbone's pooled features: a frozen backbone's head (a linear probe) cannot
            learn through a ReLU that zeroes most of its outputs (docs/training.md measures it). Always so under
            a sigmoid, which after a ReLU could not go below 0.5.

    Returns:
        A keras.Model named `arch` mapping (batch, size, size, 1) images, uint8 gray or float 0..255, to
        (batch, num_classes) probabilities.

    Raises:
        ValueError: Unknown architecture, layer name, preprocess, or an input size the network cannot take.
        WeightsError: Weights that cannot be found, fetched or loaded exactly.
    """
    entry = registry.get(arch)
    size = registry.input_size(arch, image_size)
    if size < entry.min_input_size:
        raise ValueError(f"{arch} needs inputs of at least {entry.min_input_size} px; got image_size={size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")

    swapped = num_classes != IMAGENET_CLASSES
    if not isinstance(weights, pretrained.Weights):
        weights = pretrained.resolve(arch, weights, num_classes, weights_dir)
    scaling = (preprocess if isinstance(preprocess, input_scaling.InputScaling)
               else input_scaling.resolve_preprocess(preprocess, weights, arch))

    image = keras.Input((size, size, 1), name="image")
    # The ImageNet weights expect three channels; the B-scans are gray.
    rgb = layers.Concatenate(name="gray_to_rgb")([image, image, image])
    scale, offset = scaling.scale_offset
    rgb = layers.Rescaling(scale.tolist(), offset.tolist(), name=input_scaling.INPUT_SCALING)(rgb)
    model = keras.Model(image, entry.builder(rgb), name=entry.name)
    if swapped:
        # A sigmoid after a ReLU never says "absent" (every output >= 0.5): its head is linear too.
        model = swap_head(model, entry.classifier, num_classes, activation, linear_head or activation == "sigmoid")
    if weights.path is not None:
        loading.load(model, weights.path, entry.name, entry.classifier, HEAD if swapped else None)

    if freeze_batchnorm is None:
        freeze_batchnorm = weights.path is not None
    for layer in model.layers:
        if freeze_batchnorm and isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    if trainable_from is not None:
        try:
            first = model.layers.index(loading.get_layer(model, trainable_from))  # either spelling, see loading
        except ValueError:
            raise ValueError(f"trainable_from={trainable_from!r} is not a layer of {arch}") from None
        for layer in model.layers[:first]:
            layer.trainable = False
    return model


def _activation_name(layer):
    return layer.get_config().get("activation")


def swap_head(full, classifier, num_classes, activation="softmax", linear=False):
    """The paper's head swap on a built 1000-class network: a new Glorot `classifier` of `num_classes`, float32
    softmax (or sigmoid, `activation`); `linear` leaves out a ReLU between the new classifier and the pooling.

    The backbone's layers are reused as they are (not copied), so the result shares their weights with `full`.
    """
    old = full.get_layer(classifier)
    if isinstance(old, layers.Dense):
        head = layers.Dense(num_classes, kernel_initializer="glorot_uniform", bias_initializer="zeros", name=HEAD)
    elif isinstance(old, layers.Conv2D):
        head = layers.Conv2D(
            num_classes,
            old.kernel_size,
            strides=old.strides,
            padding=old.padding,
            kernel_initializer="glorot_uniform",
            bias_initializer="zeros",
            name=HEAD,
        )
    else:
        raise TypeError(f"Cannot replace classifier {classifier!r} of type {type(old).__name__}")
    x = head(old.input)

    # Parameter-free layers between the classifier and the softmax (SqueezeNet's ReLU and global pooling)
    # stay; fresh copies keep the discarded ImageNet graph out of the new model.
    found_softmax = _activation_name(old) == "softmax"
    previous = old.output
    for layer in full.layers[full.layers.index(old) + 1 :]:
        if found_softmax or layer.input is not previous:
            raise ValueError(f"{full.name}: layer {layer.name!r} after {classifier!r} is not a plain chain")
        previous = layer.output
        if isinstance(layer, layers.Activation) and _activation_name(layer) == "softmax":
            found_softmax = True
        elif linear and (isinstance(layer, layers.ReLU) or _activation_name(layer) == "relu"):
            continue
        else:
            x = type(layer).from_config(layer.get_config())(x)
    if not found_softmax:
        raise ValueError(f"{full.name}: no softmax follows {classifier!r}")
    # float32 so that mixed-precision training still computes probabilities and loss in full precision.
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be softmax or sigmoid; got {activation!r}")
    outputs = layers.Activation(activation, dtype="float32",
                                name=HEAD_SOFTMAX if activation == "softmax" else HEAD_SIGMOID)(x)
    return keras.Model(full.input, outputs, name=full.name)


