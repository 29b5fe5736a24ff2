"""AlexNet after torchvision's `alexnet` (the one-GPU "OWT" variant: no LRN, 64/192/384/256/256 filters).

Layers carry the Caffe/MATLAB names the paper uses (conv1..conv5, fc6..fc8); `TORCHVISION_NAMES` maps them to
torchvision's module paths so a torchvision checkpoint converts layer by layer.
"""

from keras import layers

CLASSIFIER = "fc8"

# Converting a checkpoint (octtl/nets/torchvision_weights.py): Conv2d weights (out, in, h, w) -> Keras (h, w, in, out);
# Linear (out, in) -> (in, out). fc6 additionally needs its input rows reordered from torch's (C, H, W) flatten
# to Keras' (H, W, C).
TORCHVISION_NAMES = {
    "conv1": "features.0",
    "conv2": "features.3",
    "conv3": "features.6",
    "conv4": "features.8",
    "conv5": "features.10",
    "fc6": "classifier.1",
    "fc7": "classifier.4",
    "fc8": "classifier.6",
}


def build(x, classes=1000):
    """Adds AlexNet to a 3-channel image tensor.

    Args:
        x: (batch, size, size, 3) Keras tensor, size >= 63 (227 native; ImageNet weights need >= 223).
        classes: Width of fc8.

    Returns:
        The softmax output tensor; `CLASSIFIER` names its last learnable layer.
    """
    # torch pads stride-4/stride-1 convs symmetrically; Keras "same" would pad asymmetrically and shift the grid.
    x = layers.ZeroPadding2D(2, name="conv1_pad")(x)
    x = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    if x.shape[1] >= 6:
        # Identity at 224/227 px; on larger inputs it keeps fc6 at 9216 inputs, so ImageNet weights still fit.
        x = layers.AdaptiveAveragePooling2D((6, 6), name="avgpool")(x)
    # Below 223 px the map is under 6x6, which Keras cannot pool up to 6x6 as torch does; fc6 then gets fewer
    # inputs, fine for random initialisation (small test models) but not for ImageNet weights.
    x = layers.Flatten(name="flatten")(x)
    # torchvision drops out the inputs of fc6 and fc7 (Caffe drops their outputs); same layers, same rate.
    x = layers.Dropout(0.5, name="drop5")(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5, name="drop6")(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    x = layers.Dense(classes, name=CLASSIFIER)(x)
    return layers.Activation("softmax", dtype="float32", name="prob")(x)
