"""Input scaling: how a model maps its 0..255 gray B-scans, chosen by `--preprocess`, one layer inside every model.

`paper` feeds every network [-1, 1], as the paper did; `backbone` feeds what the network's ImageNet weights were
trained on (`tf` [-1, 1], `torch` [0, 1] then ImageNet mean/std, `caffe` 0..255 minus the mean pixel); `auto`
picks `backbone` for a known ImageNet file and `paper` otherwise. octtl.nets.models.build puts the chosen scale
and offset in the model's `input_scaling` layer, so a saved model carries its input contract. Imports neither
Keras nor TensorFlow: commands list the choices in their flags without them.
"""

import dataclasses
from typing import Optional

import numpy as np

from octtl.nets import pretrained, registry

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
