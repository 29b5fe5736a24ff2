"""Loads a weights file into an octtl model exactly: by layer name where the file records names, else by order.

Never partially: a missing layer, an extra layer or a shape mismatch is a `WeightsError` naming the layer. Only
the new head (after octtl.nets.models' head swap) may be absent from a file, or hold a classifier with a
different number of classes; it then keeps its Glorot initialisation. Three kinds of file, one reader and one
loader each: Keras 3 weights (`.weights.h5`, or inside a `.keras` model), keyed by class name and counter;
legacy Keras 2 `.h5` files whose layer names match the model's; and legacy files whose names do not (Keras
auto-names layers per process), matched by order as Keras loads its own ImageNet files.

Layer names: octtl's own networks name their layers after a path (torchvision's `layer4.1.conv2`, Caffe's
`fire2/squeeze1x1`) through one rule, `layer_name`: each `.` and `/` becomes `_` (`layer4_1_conv2`,
`fire2_squeeze1x1`). Keras 3 refuses `/` in a layer name, and its torch backend keys variables by
`layer name/variable name` in a torch.nn.ParameterDict, which refuses `.`; `_` passes every backend. The same rule
reads the names a file holds, so files written before the rule keep loading unchanged: Keras 2 `.h5` names
(`fire2/squeeze1x1`) and octtl's former dotted names (`fire2.squeeze1x1`, until issue #26) map onto today's
layers. Keras 3 files (`.weights.h5`, `.keras`, `best.keras`) key layers by class and counter, not by name, so
renaming changes nothing there. `get_layer` looks a layer up under either spelling.
"""

import re
import tempfile
import zipfile
import zlib
from typing import Optional

import h5py
import numpy as np

from octtl.errors import WeightsError


SEPARATOR = "_"


def layer_name(path: str) -> str:
    """octtl's Keras layer name for a path of modules (`layer4.1.conv2`, `fire2/squeeze1x1`): separators become `_`.

    Idempotent, and the identity on names without `.` or `/` (keras.applications', octtl's heads).
    """
    return path.replace(".", SEPARATOR).replace("/", SEPARATOR)


def get_layer(model, name: str):
    """`model`'s layer `name`, written either way: `fire9.concat` finds `fire9_concat` and, in a model saved before
    the rename (keras.saving.load_model keeps its names), the other way round.

    Raises:
        ValueError: No layer of `model` has that name under `layer_name`.
    """
    wanted = layer_name(name)
    found = [layer for layer in model.layers if layer.name == name] or [
        layer for layer in model.layers if layer_name(layer.name) == wanted]
    if not found:
        raise ValueError(f"{name!r} is not a layer of {model.name}")
    return found[0]


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
            # Keras 2's "fire2/squeeze1x1" and octtl's former "fire2.squeeze1x1" are today's "fire2_squeeze1x1".
            entries.append((layer_name(name), [np.asarray(group[name][w]) for w in weight_names]))
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
    """Returns ('legacy', [(name, arrays)]) or ('keras3', {key: arrays}) for a weights or model file.

    Raises:
        WeightsError: A file that is none of these, or one that cannot be read to its end (truncated, damaged).
    """
    try:
        return _read_file(path)
    except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        # h5py reports a truncated file as OSError, a missing group or attribute as KeyError; zip its own errors.
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} cannot be read: truncated or damaged? ({reason})") from None


def _read_file(path):
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as tmp:
            if "model.weights.h5" not in archive.namelist():
                raise WeightsError(f"{path} is a zip file but not a .keras model (no model.weights.h5)")
            return _read_file(archive.extract("model.weights.h5", tmp))
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


def load(model, path, arch: str, classifier: str, head: Optional[str]):
    """Loads the weights file `path` into `model` exactly (see the module docstring).

    Args:
        model: An octtl model of network `arch`.
        path: The weights file.
        arch: The network's name, for messages.
        classifier: The registry's classifier layer: the file's name for what the head swap replaced.
        head: The new head's layer name when the model's head was swapped, else None.

    Raises:
        WeightsError: The file does not fit the model; names the layer.
    """
    kind, entries = _read_weights(path)
    loader = _Loader(model, path, arch, classifier, head, legacy=kind == "legacy")
    if kind == "keras3":
        loader.by_key(entries)
    elif not loader.unknown_names(entries):
        loader.by_name(entries)
    else:
        loader.by_order(entries)


class _Loader:
    """One model and one file: the checks and assignments the three loaders share."""

    def __init__(self, model, path, arch, classifier, head, legacy):
        self.model, self.path, self.arch, self.head, self.legacy = model, path, arch, head, legacy
        self.weighted = [layer for layer in model.layers if layer.weights]
        self.head_names = {head, classifier} if head else set()

    def fail(self, message):
        raise WeightsError(f"{self.path} does not fit {self.arch} ({self.model.input_shape[1]} px): {message}")

    def assign(self, layer, arrays, file_name):
        """Loads one layer, unless it is the new head and the file holds a classifier of other width."""
        current = layer.weights if self.legacy else _own_variables(layer)
        want, got = _shapes(current), _shapes(arrays)
        if want != got:
            other_classes = len(want) == len(got) and all(w[:-1] == g[:-1] for w, g in zip(want, got))
            if self.head and layer.name == self.head and other_classes:
                return  # the file's classifier is what the head swap replaces
            self.fail(f"layer {layer.name!r} has weight shapes {want}, file layer {file_name!r} has {got}")
        if self.legacy:
            layer.set_weights(arrays)
        else:
            layer.load_own_variables({str(i): a for i, a in enumerate(arrays)})

    def by_key(self, entries: dict):
        """A Keras 3 file: layers keyed by class name and counter, which the model's layer order gives."""
        keys = _keras3_keys(self.model)
        by_key = {keys[layer.name]: layer for layer in self.weighted}
        extra = sorted(set(entries) - set(by_key))
        if extra:
            self.fail(f"the file has weights for {_few(extra)} that no layer of the model matches")
        missing = [layer.name for key, layer in by_key.items() if key not in entries and layer.name != self.head]
        if missing:
            self.fail(f"no weights for layers {_few(missing)}")
        for key, arrays in entries.items():
            self.assign(by_key[key], arrays, key)

    def unknown_names(self, entries: list) -> list:
        """The legacy file's layer names that name no layer of the model (nor its classifier)."""
        names = {layer.name for layer in self.weighted}
        return [name for name, _ in entries if name not in names and name not in self.head_names]

    def by_name(self, entries: list):
        """A legacy file whose every layer name is the model's (the file's classifier counts as the head)."""
        by_name = {layer.name: layer for layer in self.weighted}
        heads = [name for name, _ in entries if name in self.head_names]
        if len(heads) > 1:
            self.fail(f"the file has two classifiers, {heads}")
        present = {name for name, _ in entries}
        missing = [name for name in by_name if name not in present and name != self.head]
        if missing:
            self.fail(f"no weights for layers {_few(missing)}")
        for name, arrays in entries:
            self.assign(self.model.get_layer(self.head) if name in self.head_names else by_name[name], arrays,
                        name)

    def by_order(self, entries: list):
        """A legacy file with other layer names (Keras auto-names layers such as InceptionV3's "conv2d_17" per
        process): matched by order, as Keras loads its own ImageNet files. Only the head, last, may be absent."""
        required = self.weighted[:-1] if self.head else self.weighted
        if len(entries) not in (len(required), len(self.weighted)):
            self.fail(f"file layers {self.unknown_names(entries)[:5]} match no layer of the model by name, and by "
                      f"order the file has {len(entries)} weighted layers where the model has "
                      f"{len(self.weighted)}")
        for layer, (name, arrays) in zip(self.weighted, entries):
            self.assign(layer, arrays, name)
