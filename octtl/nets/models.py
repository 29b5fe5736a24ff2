"""Builds a Table I network with the paper's head swap (section II-A) and loads its weights strictly.

The head swap: the network's last learnable classification layer and its softmax are removed, every other
layer is kept as it was, and a new `num_classes`-wide layer of the same kind (Dense, or the 1x1 convolution
that classifies in SqueezeNet) is added with Glorot-uniform weights, followed by a float32 softmax.

Batch norm: pretrained networks keep their BatchNormalization layers frozen (`trainable = False`, so they run
in inference mode with the ImageNet statistics), as Keras' fine-tuning guidance advises: updating the moving
statistics from small fine-tuning batches destroys what the layers learned. Their gamma/beta stay fixed too;
every other layer trains. Randomly initialised networks train their batch norm normally. MATLAB, which the
paper used, updates the statistics instead; pass `freeze_batchnorm=False` for that.

Weights are loaded by layer name where the file records names the model has, else by layer order (as Keras
loads its own ImageNet files), and never partially: a missing layer, an extra layer or a shape mismatch is a
`WeightsError` naming the layer. Only the new head may be absent from a file, or hold a classifier with a
different number of classes; it then keeps its Glorot initialisation.
"""

import dataclasses
import re
import tempfile
import zipfile
from typing import Optional

import h5py
import keras
import numpy as np
from keras import layers

from octtl import protocol

from octtl.nets import registry

from octtl.nets import pretrained
from octtl.errors import WeightsError
from octtl.nets.pretrained import IMAGENET_CLASSES

# `auto` picks `backbone` for a known ImageNet file and `paper` otherwise (see `resolve_preprocess`).
PREPROCESS = ("paper", "backbone")
PREPROCESS_CHOICES = ("auto",) + PREPROCESS
# Per-channel (R, G, B as the first conv sees them) scale and offset from 0..255 to what each family of
# ImageNet weights was trained on, and the paper's [-1, 1]; one Rescaling layer, so nothing to load.
_IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
_IMAGENET_STD = np.array([0.229, 0.224, 0.225])
BACKBONE_SCALING = {
    "tf": (np.full(3, 1 / 127.5), np.full(3, -1.0)),
    "torch": (1 / (255 * _IMAGENET_STD), -_IMAGENET_MEAN / _IMAGENET_STD),
    "caffe": (np.ones(3), -np.array([103.939, 116.779, 123.68])),  # BGR mean pixel; gray makes order moot
}
PAPER_SCALING = BACKBONE_SCALING["tf"]  # the paper's [-1, 1] is TensorFlow's convention
SCALING_WORDS = {"paper": "[-1, 1]", "tf": "[-1, 1]", "torch": "[0, 1] then ImageNet mean/std",
                 "caffe": "0..255 minus the ImageNet mean pixel"}
INPUT_SCALING = "input_scaling"
# Models saved before the scaling moved inside every model: backbone mode had this layer, paper mode none.
LEGACY_BACKBONE_SCALING = "backbone_scaling"
HEAD = "head"
HEAD_SOFTMAX = "head_softmax"


@dataclasses.dataclass(frozen=True)
class InputScaling:
    """How a model maps its 0..255 gray inputs: the resolved `--preprocess` and the family of numbers it uses."""

    preprocess: str  # 'paper' or 'backbone'
    family: str  # 'tf' (also the paper's [-1, 1]), 'torch' or 'caffe'

    @property
    def scale_offset(self):
        """The per-channel (scale, offset) that maps 0..255 inputs into this scaling's range."""
        return PAPER_SCALING if self.preprocess == "paper" else BACKBONE_SCALING[self.family]

    def describe(self) -> str:
        """The scaling in words, as training prints it."""
        if self.preprocess == "paper":
            return "paper ([-1, 1], as the paper fed every network)"
        return f"backbone ({self.family}: {SCALING_WORDS[self.family]}, what the weights were trained on)"


def resolve_preprocess(preprocess: str, weights: pretrained.Weights, arch: str) -> InputScaling:
    """The input scaling a run uses: `auto` is `backbone` for a known ImageNet file, `paper` otherwise.

    `paper` and `backbone` are taken as given; `backbone` without a known file uses the network's registry family.

    Raises:
        ValueError: An unknown `preprocess`.
    """
    if preprocess not in PREPROCESS_CHOICES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_CHOICES}; got {preprocess!r}")
    if preprocess == "auto":
        preprocess = "backbone" if weights.imagenet is not None else "paper"
    family = weights.scaling or registry.get(arch).preprocess
    return InputScaling(preprocess, "tf" if preprocess == "paper" else family)


def scaling_mismatch(scaling: InputScaling, weights_scaling: Optional[str]) -> Optional[float]:
    """How many times the input range differs from what the weights were trained on, when over ten; else None.

    Compares the spread of 0..255 after each scaling (the mean per-channel scale): the paper's [-1, 1] is 127.5
    times narrower than the 0..255 that caffe-trained weights (VGG16, SqueezeNet) saw.
    """
    if weights_scaling is None:
        return None
    fed = float(np.mean(scaling.scale_offset[0]))
    expected = float(np.mean(BACKBONE_SCALING[weights_scaling][0]))
    ratio = max(fed, expected) / min(fed, expected)
    return ratio if ratio > 10 else None


def has_input_scaling(model) -> bool:
    """Whether a (saved) model scales its 0..255 inputs itself; old paper-mode models expect [-1, 1] instead."""
    names = {layer.name for layer in model.layers}
    return INPUT_SCALING in names or LEGACY_BACKBONE_SCALING in names


def build(
    arch,
    num_classes=2,
    weights="none",
    image_size=None,
    weights_dir=None,
    trainable_from=None,
    freeze_batchnorm=None,
    preprocess="auto",
):
    """Builds a Table I network, head-swapped to `num_classes` unless that is ImageNet's 1000.

    Args:
        arch: A key of `octtl.nets.registry.ARCHITECTURES` (or the test-only networks).
        num_classes: Classes of the new head; 1000 keeps the whole ImageNet classifier instead.
        weights: 'imagenet', 'none' (random initialisation), the path of a `.weights.h5`, legacy Keras `.h5`
            or `.keras` file, or a `pretrained.Weights` already resolved.
        image_size: Square input size; defaults to the network's native one (Table I).
        weights_dir: Directory searched first for ImageNet files (see `octtl.nets.pretrained`).
        trainable_from: Name of the first trainable layer; the layers before it in `model.layers` (topological)
            order are frozen. None trains all.
        freeze_batchnorm: Freeze BatchNormalization layers (see module docstring); None freezes them exactly
            when weights are loaded.
        preprocess: 'auto', 'paper' or 'backbone' (see `resolve_preprocess`), or an `InputScaling`. The model
            always takes 0..255 gray and its first layer, `input_scaling`, maps it: to [-1, 1] ('paper') or to
            what the weights were trained on ('backbone').

    Returns:
        A keras.Model named `arch` mapping (batch, size, size, 1) images, uint8 gray or float 0..255, to
        (batch, num_classes) softmax probabilities.

    Raises:
        ValueError: Unknown architecture, layer name, preprocess, or an input size the network cannot take.
        WeightsError: Weights that cannot be found, fetched or loaded exactly.
    """
    entry = registry.get(arch)
    size = protocol.native_size(arch, image_size)
    if size < entry.min_input_size:
        raise ValueError(f"{arch} needs inputs of at least {entry.min_input_size} px; got image_size={size}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2; got {num_classes}")

    swapped = num_classes != IMAGENET_CLASSES
    if not isinstance(weights, pretrained.Weights):
        weights = pretrained.resolve(arch, weights, num_classes, weights_dir)
    scaling = preprocess if isinstance(preprocess, InputScaling) else resolve_preprocess(preprocess, weights, arch)

    image = keras.Input((size, size, 1), name="image")
    # The ImageNet weights expect three channels; the B-scans are gray.
    rgb = layers.Concatenate(name="gray_to_rgb")([image, image, image])
    scale, offset = scaling.scale_offset
    rgb = layers.Rescaling(scale.tolist(), offset.tolist(), name=INPUT_SCALING)(rgb)
    model = keras.Model(image, entry.builder(rgb), name=entry.name)
    if swapped:
        model = swap_head(model, entry.classifier, num_classes)
    if weights.path is not None:
        _load_weights(model, weights.path, entry, swapped)

    if freeze_batchnorm is None:
        freeze_batchnorm = weights.path is not None
    for layer in model.layers:
        if freeze_batchnorm and isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    if trainable_from is not None:
        names = [layer.name for layer in model.layers]
        if trainable_from not in names:
            raise ValueError(f"trainable_from={trainable_from!r} is not a layer of {arch}")
        for layer in model.layers[: names.index(trainable_from)]:
            layer.trainable = False
    return model


def _activation_name(layer):
    return layer.get_config().get("activation")


def swap_head(full, classifier, num_classes):
    """The paper's head swap on a built 1000-class network: a new Glorot `classifier` of `num_classes`, float32 softmax.

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
        else:
            x = type(layer).from_config(layer.get_config())(x)
    if not found_softmax:
        raise ValueError(f"{full.name}: no softmax follows {classifier!r}")
    # float32 so that mixed-precision training still computes probabilities and loss in full precision.
    outputs = layers.Activation("softmax", dtype="float32", name=HEAD_SOFTMAX)(x)
    return keras.Model(full.input, outputs, name=full.name)


def _snake_case(name):
    """Keras' naming.to_snake_case, which keys layers in `.weights.h5` and `.keras` files."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _keras3_keys(model):
    """Maps each layer to the key Keras 3 files store it under: class name plus a per-class counter."""
    counts = {}
    keys = {}
    for layer in model.layers:
        base = _snake_case(type(layer).__name__)
        counts[base] = counts.get(base, -1) + 1
        keys[layer.name] = base if counts[base] == 0 else f"{base}_{counts[base]}"
    return keys


def _decode(value):
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def _read_legacy(group):
    """(name, arrays) of each weighted layer of a Keras 2 / legacy h5 file, in file order."""
    entries = []
    for name in group.attrs["layer_names"]:
        name = _decode(name)
        weight_names = [_decode(w) for w in group[name].attrs["weight_names"]]
        if weight_names:
            # Keras 3 forbids "/" in layer names; octtl writes Keras 2's "fire2/squeeze1x1" as "fire2.squeeze1x1".
            entries.append((name.replace("/", "."), [np.asarray(group[name][w]) for w in weight_names]))
    return entries


def _read_keras3(f):
    """{key: arrays} of each weighted layer of a Keras 3 weights file."""
    entries = {}
    for key, group in f["layers"].items():
        variables = group.get("vars")
        if variables is not None and len(variables):
            entries[key] = [np.asarray(variables[str(i)]) for i in range(len(variables))]
    return entries


def _read_weights(path):
    """Returns ('legacy', [(name, arrays)]) or ('keras3', {key: arrays}) for a weights or model file."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
            if "model.weights.h5" not in archive.namelist():
                raise WeightsError(f"{path} is a zip file but not a .keras model (no model.weights.h5)")
            return _read_weights(archive.extract("model.weights.h5", tmp))
    if not h5py.is_hdf5(path):
        raise WeightsError(f"{path} is neither an HDF5 weights file nor a .keras model")
    with h5py.File(path, "r") as f:
        group = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in group.attrs:
            return "legacy", _read_legacy(group)
        if "layers" in f:
            return "keras3", _read_keras3(f)
    raise WeightsError(f"{path} holds no Keras weights (neither legacy layer_names nor Keras 3 layers)")


def _few(names, shown=5) -> str:
    """The first names of a list and how many more: one error line, not a page (another network has hundreds)."""
    names = list(names)
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def _shapes(arrays):
    return [tuple(a.shape) for a in arrays]


def _own_variables(layer):
    store = {}
    layer.save_own_variables(store)
    return [store[str(i)] for i in range(len(store))]


def _load_weights(model, path, entry, swapped):
    """Loads `path` into `model` exactly; see the module docstring for the rules."""
    weighted = [layer for layer in model.layers if layer.weights]
    kind, entries = _read_weights(path)
    size = model.input_shape[1]

    def fail(message):
        raise WeightsError(f"{path} does not fit {entry.name} ({size} px): {message}")

    def assign(layer, arrays, file_name):
        """Loads one layer, unless it is the new head and the file holds a classifier of other width."""
        current = layer.weights if kind == "legacy" else _own_variables(layer)
        want, got = _shapes(current), _shapes(arrays)
        if want != got:
            other_classes = len(want) == len(got) and all(w[:-1] == g[:-1] for w, g in zip(want, got))
            if swapped and layer.name == HEAD and other_classes:
                return  # the file's classifier is what the head swap replaces
            fail(f"layer {layer.name!r} has weight shapes {want}, file layer {file_name!r} has {got}")
        if kind == "legacy":
            layer.set_weights(arrays)
        else:
            layer.load_own_variables({str(i): a for i, a in enumerate(arrays)})

    if kind == "keras3":
        keys = _keras3_keys(model)
        by_key = {keys[layer.name]: layer for layer in weighted}
        extra = sorted(set(entries) - set(by_key))
        if extra:
            fail(f"the file has weights for {_few(extra)} that no layer of the model matches")
        missing = [layer.name for key, layer in by_key.items() if key not in entries and layer.name != HEAD]
        if missing:
            fail(f"no weights for layers {_few(missing)}")
        for key, arrays in entries.items():
            assign(by_key[key], arrays, key)
        return

    head_names = {HEAD, entry.classifier} if swapped else set()
    by_name = {layer.name: layer for layer in weighted}
    unknown = [name for name, _ in entries if name not in by_name and name not in head_names]
    if not unknown:
        heads = [name for name, _ in entries if name in head_names]
        if len(heads) > 1:
            fail(f"the file has two classifiers, {heads}")
        present = {name for name, _ in entries}
        missing = [name for name in by_name if name not in present and name != HEAD]
        if missing:
            fail(f"no weights for layers {_few(missing)}")
        for name, arrays in entries:
            assign(model.get_layer(HEAD) if name in head_names else by_name[name], arrays, name)
        return

    # Names differ (Keras auto-names layers such as InceptionV3's "conv2d_17" per process): match by order,
    # which is how Keras itself loads its ImageNet files. Only the head, last, may be absent.
    required = weighted[:-1] if swapped else weighted
    if len(entries) not in (len(required), len(weighted)):
        fail(
            f"file layers {unknown[:5]} match no layer of the model by name, and by order the file has "
            f"{len(entries)} weighted layers where the model has {len(weighted)}"
        )
    for layer, (name, arrays) in zip(weighted, entries):
        assign(layer, arrays, name)
