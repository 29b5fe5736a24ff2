"""octtl.training.config and octtl.runs: one variant folder name per setting, and its inverse."""

import pytest

from octtl import protocol, runs
from octtl.errors import InputError
from octtl.training import config

NAMES = [  # (lr, augment, augment_strength, denoise, denoise_strength) -> name
    ((3e-4, ("flip", "shift"), 1.0, "none", None), "lr0.0003-aug_flip+shift"),
    ((3e-4, ("shift", "flip"), 1.0, "none", None), "lr0.0003-aug_flip+shift"),
    ((1e-4, ("speckle",), 0.5, "none", None), "aug_speckle-augs0.5"),
    ((1e-4, (), 0.5, "none", None), None),  # a strength without augmentations changes nothing
    ((1e-4, (), 1.0, "nlm", 12), "dn_nlm-dns012"),
    ((1e-4, (), 1.0, "nlm", 10), "dn_nlm"),  # nlm's default strength
    ((1e-3, ("scale",), 2.0, "median", 5), "lr0.001-aug_scale-augs2-dn_median-dns005"),
    ((1e-4, (), 1.0, "bilateral", 25.5), "dn_bilateral-dns025.5"),
    ((protocol.LR, (), 1.0, "none", None), None),
]


@pytest.mark.parametrize("settings, name", NAMES)
def test_variant_name_and_its_inverse(settings, name):
    assert config.variant_name(*settings) == name
    if name is not None:
        parsed = config.parse_variant(name)
        assert parsed == config.normalize(*settings)
        assert config.variant_name(**parsed) == name


def test_names_sort_by_value():
    lrs = [1e-5, 3e-5, 1e-4 * 2, 3e-4, 1e-3, 0.01, 0.3]
    names = [config.variant_name(lr, (), 1.0, "none", None) for lr in lrs]
    assert sorted(names) == names
    strengths = [3, 5, 9, 11, 15]
    names = [config.variant_name(1e-4, (), 1.0, "median", s) for s in strengths]
    assert sorted(names) == names
    names = [config.variant_name(1e-4, (), 1.0, "bilateral", s) for s in (5, 12.5, 40, 100, 200)]
    assert sorted(names) == names


def test_defaults_can_be_another_base():
    base = {**runs.VARIANT_DEFAULTS, "lr": 3e-4, "augment": ("flip",)}
    assert config.variant_name(3e-4, ("flip",), 1.0, "none", None, defaults=base) is None
    assert config.variant_name(1e-4, (), 1.0, "none", None, defaults=base) == "lr0.0001-aug_none"
    assert config.parse_variant("lr0.0001-aug_none", base)["augment"] == ()


@pytest.mark.parametrize("name", [
    "", "lr0.0001", "lr0.00030", "lr1e-4", "aug_shift+flip", "dn_nlm-lr0.001", "dn_nlm-dns10", "dn_nlm-dns12",
    "dn_gauss", "dn_median-dns004", "dns012", "augs0.5", "aug_flip-augs1", "lr0.0003-", "fold0", "batch16"])
def test_other_spellings_are_refused_in_one_line(name):
    with pytest.raises(InputError) as e:
        config.parse_variant(name)
    assert "not a variant folder name" in str(e.value) and "\n" not in str(e.value)
