"""Maps torchvision ImageNet checkpoints onto octtl's alexnet, resnet18, googlenet and squeezenet.

keras.applications has none of these four networks, and the ImageNet weights that can be had for them are
torchvision's. The mapping works on a state dict already turned into numpy arrays; only `read_checkpoint`, which
tools/import_torchvision_weights.py calls, imports torch (the optional extra `octtl[convert]`).

Each weighted Keras layer takes the tensors of one torchvision module: the one its name spells (resnet18 and
googlenet name their layers after the module paths, `layer4.1.conv2` as `layer4_1_conv2` by
octtl.nets.loading.layer_name; no module name of theirs holds a `_`, so the path reads back exactly) or its net's
`TORCHVISION_NAMES` entry (alexnet, squeezenet):

- Conv2D: weight (out, in, h, w) -> kernel (h, w, in, out); bias as is.
- Dense: weight (out, in) -> kernel (in, out); bias as is. AlexNet's fc6 also reorders its 9216 inputs: torch
  flattens the 256x6x6 map channel first (C, H, W), Keras channel last (H, W, C).
- BatchNormalization: weight, bias, running_mean, running_var -> gamma, beta, moving_mean, moving_variance. The
  checkpoint does not record eps, so each layer's epsilon is checked against torchvision's (1e-5; GoogLeNet's
  BasicConv2d 1e-3).

Two kinds of checkpoint tensors are read and deliberately dropped: BatchNorm's `num_batches_tracked` (a training
counter with no effect in inference) and GoogLeNet's auxiliary classifiers `aux1.*`/`aux2.*` (torchvision stores
them in the checkpoint but removes them from pretrained models, as octtl's GoogLeNet does). Any other tensor
that no layer takes, and any layer weight that no tensor sets, is a `ConversionError` listing them all.

GoogLeNet's `transform_input`: torchvision builds the pretrained GoogLeNet with `transform_input=True`, which
maps the ImageNet-normalised input back to (x - 0.5) / 0.5 of the [0, 1] pixels, i.e. [-1, 1], before conv1.
octtl's GoogLeNet starts at conv1, so it takes [-1, 1] inputs (registry preprocess 'tf') and the transform needs
no change to the weights.
"""

import dataclasses
import hashlib
import os
import re
import tempfile
from typing import Mapping, Optional

import keras
import numpy as np
from keras import layers

from octtl.nets import registry

from octtl.nets import alexnet, loading, squeezenet

_BATCHNORM = ("weight", "bias", "running_mean", "running_var")
_COUNTER = "num_batches_tracked"


class CheckpointError(Exception):
    """A checkpoint file that cannot be read as the state dict it should be."""


class ConversionError(ValueError):
    """A state dict that does not map exactly onto the octtl network."""


@dataclasses.dataclass(frozen=True)
class Source:
    """How one torchvision network's state dict maps onto the octtl network of the same name.

    Attributes:
        names: Keras layer name -> torchvision module path, where the name is not the path's
            `loading.layer_name`.
        batchnorm_epsilon: torchvision's BatchNorm eps, None for networks without batch norm.
        dropped_prefixes: Module paths whose tensors the octtl network deliberately lacks.
        channels_first_flatten: Dense layer -> the Flatten layer that feeds it a flattened (H, W, C) map.
    """

    names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    batchnorm_epsilon: Optional[float] = None
    dropped_prefixes: tuple = ()
    channels_first_flatten: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def module_path(self, layer_name):
        """The torchvision module whose tensors `layer_name` takes: its `names` entry, else the name read back."""
        return self.names.get(layer_name, layer_name.replace(loading.SEPARATOR, "."))


SOURCES = {
    "alexnet": Source(names=alexnet.TORCHVISION_NAMES, channels_first_flatten={"fc6": "flatten"}),
    "resnet18": Source(batchnorm_epsilon=1e-5),
    "googlenet": Source(batchnorm_epsilon=1e-3, dropped_prefixes=("aux1.", "aux2.")),
    "squeezenet": Source(names=squeezenet.TORCHVISION_NAMES),
}


def converted_files(arch):
    """(no-top, top) WeightsFiles the registry expects from converting `arch`'s torchvision checkpoint."""
    files = [f for f in registry.get(arch).imagenet if f.convert_from]
    notop = [f for f in files if not f.has_classifier]
    top = [f for f in files if f.has_classifier]
    return notop[0], top[0]


def checkpoint_url(arch):
    """The public URL of `arch`'s torchvision ImageNet checkpoint."""
    return converted_files(arch)[1].convert_from


def _sha256(path):
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _check_name(arch, path):
    """Refuses another network's torchvision checkpoint, and a torchvision file whose hash its name contradicts."""
    name = os.path.basename(path)
    for other in SOURCES:
        if other != arch and name == os.path.basename(checkpoint_url(other)):
            raise CheckpointError(f"{path}: that is torchvision's {other} checkpoint, not {arch}'s")
    if name == os.path.basename(checkpoint_url(arch)):
        # torch.hub's convention: the name carries the first hex digits of the file's sha256.
        prefix = re.search(r"-([0-9a-f]+)\.pth$", name).group(1)
        digest = _sha256(path)
        if not digest.startswith(prefix):
            raise CheckpointError(
                f"{path}: its sha256 starts with {digest[:len(prefix)]}, not {prefix} as its name says; "
                "an incomplete or altered download"
            )


def read_checkpoint(arch, path):
    """Reads `arch`'s torchvision checkpoint (a `.pth` state dict) as {tensor name: numpy array}; needs torch.

    Raises:
        CheckpointError: No torch, no such file, not a state dict, another network's checkpoint, or a torchvision
            file name whose hash prefix the file's sha256 does not start with. The message starts with `path`.
    """
    try:
        import torch  # The optional extra: nothing else in octtl needs it.
    except ImportError:
        raise CheckpointError(f"{path}: reading .pth checkpoints needs torch: pip install 'octtl[convert]'") from None
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    _check_name(arch, path)
    try:
        # weights_only: a checkpoint is data; never run code pickled into it.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises whatever its unpickler meets
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise CheckpointError(f"{path}: not a torch checkpoint ({reason})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # training scripts often wrap the state dict
    if not isinstance(loaded, dict) or not loaded or not all(torch.is_tensor(v) for v in loaded.values()):
        raise CheckpointError(f"{path}: not a state dict (tensor names mapped to tensors)")
    # float32 also for half-precision copies, which numpy cannot take from bfloat16.
    return {
        key: (value.detach().float() if value.is_floating_point() else value.detach()).cpu().numpy()
        for key, value in loaded.items()
    }


def _source(arch):
    if arch not in SOURCES:
        raise ValueError(f"No torchvision checkpoint maps onto {arch!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[arch]


def _torch_shape(layer, keras_shape, index):
    """The torch layout of a Keras weight: what the checkpoint tensor must look like."""
    if index == 0 and isinstance(layer, layers.Conv2D):
        h, w, i, o = keras_shape
        return (o, i, h, w)
    if index == 0 and isinstance(layer, layers.Dense):
        return tuple(reversed(keras_shape))
    return tuple(keras_shape)


def _to_keras(layer, array, index, network, source):
    """One checkpoint tensor in the layout of the Keras weight it sets."""
    if index == 0 and isinstance(layer, layers.Conv2D):
        return array.transpose(2, 3, 1, 0)
    if index == 0 and isinstance(layer, layers.Dense):
        if layer.name in source.channels_first_flatten:
            height, width, channels = network.get_layer(source.channels_first_flatten[layer.name]).input.shape[1:]
            array = array.reshape(-1, channels, height, width).transpose(0, 2, 3, 1).reshape(array.shape[0], -1)
        return array.T
    return array


def _parameter_names(layer):
    """torchvision's names of a Keras layer's weights, in Keras' order."""
    if isinstance(layer, layers.BatchNormalization):
        if not (layer.center and layer.scale):
            raise ConversionError(f"layer {layer.name!r}: torchvision's BatchNorm has both gamma and beta")
        return _BATCHNORM
    if isinstance(layer, (layers.Conv2D, layers.Dense)):
        return ("weight", "bias") if layer.use_bias else ("weight",)
    raise ConversionError(f"layer {layer.name!r}: no torchvision counterpart for {type(layer).__name__}")


def _listing(items, limit=20):
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def imagenet_network(arch) -> keras.Model:
    """The registry's 1000-class `arch` on 3-channel inputs of its native size: the layers the checkpoint fills.

    Built from the registry and the backbone alone (not octtl.nets.models.build, which loads these files): the
    weightless gray-to-RGB and scaling layers an octtl model adds in front change no weighted layer's name or
    its Keras 3 file key, so files written from this network load into octtl models.
    """
    entry = registry.get(arch)
    image = keras.Input((entry.input_size, entry.input_size, 3), name="rgb")
    return keras.Model(image, entry.builder(image), name=entry.name)


def convert(arch, state_dict, network):
    """Maps a torchvision state dict onto the weighted layers of `network`, exactly.

    Args:
        arch: One of `SOURCES`.
        state_dict: torchvision tensor name -> numpy array, as the checkpoint holds them.
        network: The 1000-class `arch` backbone and classifier (`imagenet_network(arch)`), whose
            layer names and weight shapes define the mapping.

    Returns:
        Keras layer name -> list of float32 arrays in the layer's `get_weights()` order and shapes.

    Raises:
        ConversionError: Tensors no layer takes, layer weights no tensor sets, or shapes that differ; all listed.
    """
    source = _source(arch)
    unused = set(state_dict)
    missing, mismatched, result = [], [], {}
    for layer in network.layers:
        if not layer.weights:
            continue
        prefix = source.module_path(layer.name)
        if source.batchnorm_epsilon is not None and isinstance(layer, layers.BatchNormalization):
            if not np.isclose(layer.epsilon, source.batchnorm_epsilon, rtol=1e-6, atol=0):
                raise ConversionError(
                    f"layer {layer.name!r} has epsilon {layer.epsilon}, torchvision's {arch} "
                    f"{source.batchnorm_epsilon}: the octtl network does not match torchvision's"
                )
            unused.discard(f"{prefix}.{_COUNTER}")
        arrays = []
        for index, (parameter, weight) in enumerate(zip(_parameter_names(layer), layer.weights, strict=True)):
            key = f"{prefix}.{parameter}"
            if key not in state_dict:
                missing.append(f"{key} (layer {layer.name})")
                continue
            unused.discard(key)
            array = np.asarray(state_dict[key])
            expected = _torch_shape(layer, tuple(weight.shape), index)
            if array.shape != expected:
                mismatched.append(f"{key} is {tuple(array.shape)}, layer {layer.name} needs {expected}")
                continue
            arrays.append(_to_keras(layer, array.astype(np.float32), index, network, source))
        result[layer.name] = arrays
    unused = sorted(key for key in unused if not key.startswith(source.dropped_prefixes))
    problems = []
    if unused:
        problems.append(f"checkpoint tensors no layer takes: {_listing(unused)}")
    if missing:
        problems.append(f"layer weights the checkpoint lacks: {_listing(missing)}")
    if mismatched:
        problems.append(f"shapes that differ: {_listing(mismatched)}")
    if problems:
        raise ConversionError(f"not a torchvision {arch} state dict: " + "; ".join(problems))
    return result


def write(arch, state_dict, output_dir):
    """Converts a torchvision state dict into the no-top and top Keras files `weights='imagenet'` loads.

    Both files are written under temporary names and renamed only once both are complete, so a failure leaves
    no partial output.

    Args:
        arch: One of `SOURCES`.
        state_dict: torchvision tensor name -> numpy array.
        output_dir: Directory for the files; created if missing.

    Returns:
        (no-top path, top path).

    Raises:
        ConversionError: The state dict does not map exactly (see `convert`).
    """
    notop_file, top_file = converted_files(arch)
    network = imagenet_network(arch)
    for name, arrays in convert(arch, state_dict, network).items():
        network.get_layer(name).set_weights(arrays)
    classifier = registry.get(arch).classifier
    # Everything up to the classifier; its layers keep their order, so they keep their Keras 3 file keys.
    backbone = keras.Model(network.input, network.get_layer(classifier).input)

    os.makedirs(output_dir, exist_ok=True)
    targets = [os.path.join(output_dir, f.file_name) for f in (notop_file, top_file)]
    temporary = []
    try:
        for model in (backbone, network):
            # Keras insists on the .weights.h5 suffix; the dot prefix keeps half-written files out of listings.
            handle, path = tempfile.mkstemp(prefix=f".{arch}-", suffix=".weights.h5", dir=output_dir)
            os.close(handle)
            temporary.append(path)
            model.save_weights(path, overwrite=True)
        for path, target in zip(temporary, targets):
            os.replace(path, target)
    finally:
        for path in temporary:
            if os.path.exists(path):
                os.remove(path)
    return tuple(targets)
