"""A network for tests only: two small convolutions and a classifier, built in well under a second.

It is not in Table I and not in `architectures.ARCHITECTURES` (so `--arch` never offers it); tests use it where
the pipeline, the protocol or the outputs are the point and a real network would only cost time.
"""

from keras import layers

CLASSIFIER = "predictions"


def build(x):
    """Maps a (batch, size, size, 3) tensor to a 1000-class softmax, like the Table I builders."""
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    return layers.Dense(1000, activation="softmax", name=CLASSIFIER)(x)
