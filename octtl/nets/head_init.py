"""The new head's Glorot-uniform weights drawn by NumPy from the run's seed: the same head on every Keras backend.

octtl.nets.models.build gives the swapped-in head Keras' `glorot_uniform` initialiser, whose draws come from the
backend's own random generator (TensorFlow's, JAX's or PyTorch's), so one seed gives three different heads.
`initialise_head` overwrites the head after build with the same distribution drawn by NumPy (issue #26): limit
sqrt(6 / (fan_in + fan_out)), fans computed as Keras computes them (a convolution's receptive field counts),
bias zero. The backbone is untouched, so a network with ImageNet weights and this head computes the same
probabilities on any backend, up to float rounding.
"""

import math

import numpy as np

from octtl.nets.models import HEAD

_STREAM = 0x4EAD  # the head's stream of the run's seed, apart from the seed's other uses


def fans(shape) -> tuple:
    """(fan_in, fan_out) of a kernel shape, as keras.initializers compute them (Dense: (in, out); a convolution
    (..., in, out) multiplies both by its receptive field)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:
        return shape
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def glorot_uniform(shape, seed: int) -> np.ndarray:
    """A float32 kernel drawn uniformly from [-limit, limit], limit = sqrt(6 / (fan_in + fan_out)), from `seed`."""
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / max(1.0, fan_in + fan_out))
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, _STREAM])
    return rng.uniform(-limit, limit, tuple(shape)).astype(np.float32)


def initialise_head(model, seed: int, name: str = HEAD) -> np.ndarray:
    """Sets the head layer's kernel to `glorot_uniform` from `seed` and its bias to zero; returns the kernel.

    Raises:
        ValueError: The model has no such layer (a 1000-class model keeps ImageNet's classifier, no new head).
    """
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise ValueError(f"{model.name} has no layer {name!r}: only a head-swapped model has a new head") from None
    kernel = glorot_uniform(tuple(layer.kernel.shape), seed)
    layer.set_weights([kernel, np.zeros(tuple(layer.bias.shape), np.float32)])
    return kernel
