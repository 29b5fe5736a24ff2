"""Where a network's weights come from: ImageNet files found by name or checksum, packaged, fetched or converted.

`resolve(arch, weights)` turns a `weights=` value ('imagenet', 'none' or a path) into the file to load and what
that file is. A file is a *known ImageNet file* when it is one of the registry's (`Architecture.imagenet`): by
its file name, or, for files whose checksum is published, by its bytes under any name. Known files say which
input scaling they were trained with (`tf`, `torch` or `caffe`), which `--preprocess=auto` follows.

`weights='imagenet'` looks, in order, in `weights_dir`, `$OCTTL_WEIGHTS_DIR`, the Keras cache
(`$KERAS_HOME/models`) and the files packaged with octtl (SqueezeNet v1.1, MIT licence, so the demo transfers
offline); first by file name, then, for files with a published checksum, for the same bytes under another name
(sizes are compared before anything is hashed, and digests are cached by path, size and modification time);
each folder is searched both ways before the next.
Then it downloads the file where a public URL exists, or converts torchvision's checkpoint when torch is
installed and the checkpoint is in torch's cache or can be downloaded; otherwise one line names the command.

This module imports neither TensorFlow nor Keras at import time.
"""

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Callable, Optional

from octtl import outputs

from octtl.nets import registry
from octtl.errors import WeightsError

WEIGHTS_DIR_ENV = "OCTTL_WEIGHTS_DIR"
IMPORT_TOOL = "tools/import_torchvision_weights.py"
IMAGENET_CLASSES = 1000
PACKAGED_DIR = pathlib.Path(__file__).resolve().parent / "weights"
_SUFFIXES = (".h5", ".hdf5", ".keras")


@dataclasses.dataclass(frozen=True)
class Weights:
    """What a `weights=` value resolved to.

    Attributes:
        requested: The value as given ('imagenet', 'none' or a path).
        path: The file to load; None for random initialisation.
        imagenet: The registry's entry when `path` is a known ImageNet file, else None.
        scaling: Input scaling the file was trained with ('tf', 'torch', 'caffe'); None when unknown or random.
    """

    requested: str
    path: Optional[str]
    imagenet: Optional[registry.WeightsFile]
    scaling: Optional[str]

    def describe(self) -> str:
        """The weights in a few words, for the console and result.json."""
        if self.path is None:
            return "random initialisation (no pretrained weights)"
        if self.imagenet is None:
            return f"your weights file {self.path}"
        where = " (packaged with octtl)" if pathlib.Path(self.path).parent == PACKAGED_DIR else ""
        return f"ImageNet weights {self.path}{where}"


def resolve(arch, weights, num_classes=2, weights_dir=None, say: Callable[[str], None] = print) -> Weights:
    """The file `weights` names for `arch` and what it is; finds, fetches or converts ImageNet files.

    Args:
        arch: A registry name.
        weights: 'imagenet', 'none' (or None) or the path of a weights file.
        num_classes: 1000 keeps ImageNet's classifier, which only the files with a top have.
        weights_dir: Searched first for ImageNet files.
        say: Where the one line about a download or conversion goes.

    Raises:
        WeightsError: No such file, or ImageNet weights that cannot be found, fetched or converted.
    """
    entry = registry.get(arch)
    if weights is None or weights == "none":
        return Weights("none", None, None, None)
    if weights == "imagenet":
        known, path = find_imagenet(entry, num_classes != IMAGENET_CLASSES, weights_dir, say)
        return Weights("imagenet", path, known, known.preprocess or entry.preprocess)
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsError(f"--weights={path}: no such file (expected imagenet, none or a weights file)")
    known = identify(entry, path)
    scaling = (known.preprocess or entry.preprocess) if known else None
    return Weights(path, path, known, scaling)


def identify(entry: registry.Architecture, path) -> Optional[registry.WeightsFile]:
    """The registry's ImageNet file of `entry` that `path` is, by file name or checksum; None if none."""
    name = os.path.basename(path)
    for candidate in entry.imagenet:
        if candidate.file_name == name:
            return candidate
    for candidate in entry.imagenet:
        if _same_bytes(path, candidate):
            return candidate
    return None


def keras_models_dir() -> str:
    """The Keras cache, $KERAS_HOME/models: searched by `weights='imagenet'`, where downloads and conversions go."""
    return os.path.join(_keras_home(), "models")


def search_dirs(weights_dir=None) -> list:
    """The folders `weights='imagenet'` searches, in order."""
    dirs = [d for d in (weights_dir, os.environ.get(WEIGHTS_DIR_ENV)) if d]
    return dirs + [keras_models_dir(), str(PACKAGED_DIR)]


def torch_hub_checkpoint(url) -> str:
    """Where torch.hub (hence any torchvision download) caches the checkpoint at `url`."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return os.path.join(torch_home, "hub", "checkpoints", url.rsplit("/", 1)[-1])


def import_command(arch) -> str:
    """The command that converts `arch`'s torchvision checkpoint into the files `weights='imagenet'` finds."""
    url = next(f.convert_from for f in registry.get(arch).imagenet if f.convert_from)
    return f"python {IMPORT_TOOL} --arch={arch} --checkpoint={torch_hub_checkpoint(url)}"


def find_imagenet(entry, swapped, weights_dir=None, say: Callable[[str], None] = print):
    """Finds `entry`'s ImageNet file locally, else fetches or converts it, else says how to get it.

    Returns:
        (the registry's WeightsFile, local path).
    """
    if not entry.imagenet:
        raise WeightsError(f"{entry.name} has no ImageNet weights; use --weights=none or a weights file")
    candidates = [f for f in entry.imagenet if swapped or f.has_classifier]
    if not candidates:
        raise WeightsError(f"the ImageNet weights of {entry.name} lack the 1000-class classifier; "
                           "build with num_classes != 1000")
    directories = search_dirs(weights_dir)
    for directory in directories:
        for candidate in candidates:
            path = os.path.join(directory, candidate.file_name)
            if os.path.isfile(path):
                if candidate.file_hash and not _same_bytes(path, candidate):
                    raise WeightsError(f"{path} is not {entry.name}'s ImageNet file: its checksum is not "
                                       f"{candidate.file_hash}")
                return candidate, path
        for candidate in candidates:
            if candidate.file_hash:
                for path in _weights_files(directory):
                    if _same_bytes(path, candidate):
                        return candidate, path

    where = ", ".join(directories[:-1])
    downloadable = [f for f in candidates if f.url]
    converted = [f for f in candidates if f.convert_from]
    if downloadable:
        return _download(entry, downloadable[0], where, converted)
    if converted:
        return _convert(entry, converted[0], swapped, weights_dir, say)
    without_classifier = [f.file_name for f in entry.imagenet if not f.has_classifier]
    raise WeightsError(f"no ImageNet weights for {entry.name} in {where}: {', '.join(without_classifier)} lacks "
                       "the 1000-class classifier that num_classes=1000 keeps")


def _download(entry, wanted, where, converted):
    import keras

    try:
        path = keras.utils.get_file(wanted.file_name, wanted.url, file_hash=wanted.file_hash,
                                    cache_subdir="models", cache_dir=_keras_home())
    except Exception as error:  # Keras reports an unreachable URL as a plain Exception.
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        alternative = f", or run `{import_command(entry.name)}`" if converted else ""
        raise WeightsError(
            f"cannot fetch {entry.name}'s ImageNet weights {wanted.file_name} ({reason}); put that file "
            f"in {where}, or pass --weights=PATH{alternative}") from None
    return wanted, path


def _convert(entry, wanted, swapped, weights_dir, say):
    """Converts torchvision's checkpoint into the Keras cache when torch is there; else names the command."""
    checkpoint = torch_hub_checkpoint(wanted.convert_from)
    command = import_command(entry.name)
    if not have_torch():
        raise WeightsError(f"no ImageNet weights for {entry.name} yet: install torch "
                           f"(pip install 'octtl[convert]') and run `{command}`")
    from octtl.nets import torchvision_weights

    if not os.path.isfile(checkpoint):
        say(f"weights: downloading torchvision's {entry.name} checkpoint {wanted.convert_from}")
        try:
            download_checkpoint(wanted.convert_from, checkpoint)
        except Exception as error:  # urllib's errors, whatever the network does
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
            raise WeightsError(f"no ImageNet weights for {entry.name}: cannot download {wanted.convert_from} "
                               f"({reason}); put it at {checkpoint} and run `{command}`") from None
    say(f"weights: converting torchvision's {entry.name} checkpoint {checkpoint} into {keras_models_dir()} "
        "(once)")
    try:
        state_dict = torchvision_weights.read_checkpoint(entry.name, checkpoint)
        torchvision_weights.write(entry.name, state_dict, keras_models_dir())
    except (torchvision_weights.CheckpointError, torchvision_weights.ConversionError) as error:
        raise WeightsError(f"cannot convert {checkpoint}: {error}") from None
    path = os.path.join(keras_models_dir(), wanted.file_name)
    return wanted, path


def have_torch() -> bool:
    """Whether torch, which reads torchvision checkpoints, is installed (the optional extra octtl[convert])."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def download_checkpoint(url, path):
    """Fetches a torchvision checkpoint into torch's cache, as torchvision itself would."""
    import torch

    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.hub.download_url_to_file(url, path, progress=False)


def _keras_home() -> str:
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def _weights_files(directory) -> list:
    try:
        return sorted(str(p) for p in pathlib.Path(directory).iterdir()
                      if p.suffix.lower() in _SUFFIXES and p.is_file())
    except OSError:
        return []  # A search folder that does not exist holds nothing.


def _same_bytes(path, candidate: registry.WeightsFile) -> bool:
    """Whether the file at `path` is `candidate`: its size first (when the registry has it), then its digest."""
    if not candidate.file_hash:
        return False
    if candidate.file_size is not None and os.path.getsize(path) != candidate.file_size:
        return False
    kind = "md5" if len(candidate.file_hash) == 32 else "sha256"
    return _digests(path)[kind] == candidate.file_hash


_MEMO: dict = {}


def _digests(path) -> dict:
    """md5 and sha256 of a file, computed in one pass and cached by path, size and modification time.

    The cache ($KERAS_HOME/octtl/checksums.json) saves hashing large files again in later runs; a cache that
    cannot be read or written only costs that time.
    """
    stat = os.stat(path)
    key = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}"
    if key in _MEMO:
        return _MEMO[key]
    cache_path = pathlib.Path(_keras_home()) / "octtl" / "checksums.json"
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), dict):
        _MEMO[key] = cache[key]
        return cache[key]
    md5, sha256 = hashlib.md5(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
            sha256.update(chunk)
    _MEMO[key] = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
    try:
        cache[key] = _MEMO[key]
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        outputs.write_json(cache_path, cache)
    except OSError:
        pass  # A read-only home: the digest is still right, only not remembered.
    return _MEMO[key]
