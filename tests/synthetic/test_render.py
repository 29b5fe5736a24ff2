"""Tests for the synthetic RETOUCH-like generator (octtl/synthetic/render.py) and its entry script."""

import hashlib
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from octtl.synthetic import render

from conftest import REPO  # noqa: E402
from octtl.errors import InputError  # noqa: E402
SMALL = dict(bscans=6, height=48, width=40)

# vendor: (folder, first volume, default shape, dtype, axial spacing in mm)
EXPECTED_VENDORS = {
    "cirrus": ("RETOUCH-TrainingSet-Cirrus", "TRAIN001", (128, 1024, 512), np.uint8, 0.00195),
    "spectralis": ("RETOUCH-TrainingSet-Spectralis", "TRAIN025", (49, 496, 512), np.uint16, 0.0039),
    "topcon": ("RETOUCH-TrainingSet-Topcon", "TRAIN049", (128, 885, 512), np.uint8, 0.0026),
}


def _read(path: pathlib.Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def _digest(folder: pathlib.Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _runs(flags) -> list[int]:
    """Lengths of the runs of consecutive True values."""
    runs, n = [], 0
    for flag in list(flags) + [False]:
        if flag:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def _tool(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, str(REPO / "tools" / "make_synthetic.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_vendor_is_expected():
    assert set(render.VENDORS) == set(EXPECTED_VENDORS)


@pytest.mark.parametrize("vendor", sorted(EXPECTED_VENDORS))
def test_vendor_layout_and_readback(tmp_path, vendor):
    folder, first, shape, dtype, axial = EXPECTED_VENDORS[vendor]
    spec = render.VENDORS[vendor]
    assert (spec.folder, (spec.bscans, spec.height, spec.width), spec.dtype) == (folder, shape, np.dtype(dtype))
    assert spec.spacing[1] == pytest.approx(axial)

    paths = render.write_dataset(tmp_path, vendor=vendor, volumes=2, seed=1, **SMALL)

    number = int(first[5:])
    assert paths == [tmp_path / folder / f"TRAIN{number:03d}", tmp_path / folder / f"TRAIN{number + 1:03d}"]
    assert sorted(os.listdir(tmp_path)) == [folder]  # No staging folder left behind.
    for path in paths:
        assert sorted(os.listdir(path)) == ["oct.mhd", "oct.raw", "reference.mhd", "reference.raw"]
        oct_image, ref_image = _read(path / "oct.mhd"), _read(path / "reference.mhd")
        oct_volume = sitk.GetArrayFromImage(oct_image)
        reference = sitk.GetArrayFromImage(ref_image)
        assert oct_volume.shape == reference.shape == (SMALL["bscans"], SMALL["height"], SMALL["width"])
        assert oct_volume.dtype == dtype and reference.dtype == np.uint8
        assert oct_image.GetSpacing() == pytest.approx(spec.spacing)
        assert ref_image.GetSpacing() == pytest.approx(spec.spacing)
        assert set(np.unique(reference)) <= {0, 1, 2, 3}
        assert "CompressedData = False" in (path / "oct.mhd").read_text()
        assert (path / "oct.raw").stat().st_size == oct_volume.size * oct_volume.itemsize


def test_numbering_continues_past_the_vendor_range(tmp_path):
    paths = render.write_dataset(tmp_path, vendor="spectralis", volumes=25, bscans=1, height=16, width=16)
    assert [p.name for p in paths[:2]] == ["TRAIN025", "TRAIN026"]
    assert paths[-1].name == "TRAIN049"


def test_same_seed_gives_identical_files_and_volume_k_ignores_the_count(tmp_path):
    a = render.write_dataset(tmp_path / "a", volumes=3, seed=5, **SMALL)[0].parent
    b = render.write_dataset(tmp_path / "b", volumes=3, seed=5, **SMALL)[0].parent
    one = render.write_dataset(tmp_path / "one", volumes=1, seed=5, **SMALL)[0].parent
    other = render.write_dataset(tmp_path / "other", volumes=3, seed=6, **SMALL)[0].parent

    assert _digest(a) == _digest(b)
    assert _digest(one) == {k: v for k, v in _digest(a).items() if k.startswith("TRAIN025")}
    assert _digest(other)["TRAIN025/oct.raw"] != _digest(a)["TRAIN025/oct.raw"]


def test_make_volume_is_deterministic():
    first = render.make_volume(np.random.default_rng(3), 4, 32, 32, np.uint8)
    again = render.make_volume(np.random.default_rng(3), 4, 32, 32, np.uint8)
    other = render.make_volume(np.random.default_rng(4), 4, 32, 32, np.uint8)
    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("shape", [(1, 16, 16), (0, 32, 32), (2, 15, 32), (2, 32, 15), (2, -1, 32)])
def test_make_volume_sizes(shape):
    if min(shape) < 1 or shape[1] < render.MIN_ROWS or shape[2] < render.MIN_COLUMNS:
        with pytest.raises(ValueError):
            render.make_volume(np.random.default_rng(0), *shape)
    else:
        oct_volume, reference = render.make_volume(np.random.default_rng(0), *shape, fluid_quantile=0.99)
        assert oct_volume.shape == reference.shape == shape


def test_failed_run_leaves_no_dataset(tmp_path, monkeypatch):
    written = []

    def fail_on_second(folder, *args):
        if written:
            raise OSError("disk full")
        written.append(folder)

    monkeypatch.setattr(render, "_write_volume", fail_on_second)
    with pytest.raises(OSError):
        render.write_dataset(tmp_path, volumes=3, **SMALL)
    assert os.listdir(tmp_path) == []


def test_non_empty_vendor_folder_is_refused(tmp_path):
    render.write_dataset(tmp_path, volumes=1, **SMALL)
    before = _digest(tmp_path)
    with pytest.raises(InputError, match="already exists and is not empty"):
        render.write_dataset(tmp_path, volumes=1, seed=9, **SMALL)
    assert _digest(tmp_path) == before


class TestFullSizeSpectralis:
    """Statistics of 12 full-size Spectralis volumes, drawn as write_dataset draws a dataset."""

    @pytest.fixture(scope="class")
    @classmethod
    def volumes(cls):
        spec = render.VENDORS["spectralis"]
        quantiles = render.fluid_quantiles(2024, 12)
        summaries = []
        for seed, quantile in zip(np.random.SeedSequence(2024).spawn(12), quantiles):
            oct_volume, reference = render.make_volume(
                np.random.default_rng(seed), spec.bscans, spec.height, spec.width, spec.dtype,
                fluid_quantile=quantile, speckle=spec.speckle)
            summaries.append(cls._summarise(oct_volume, reference))
        return summaries

    @staticmethod
    def _summarise(oct_volume, reference):
        """Keeps what the assertions need, not 37 MB per volume."""
        fluid = reference > 0
        # Tissue right around each pocket: a 4-pixel ring in the B-scan plane.
        ring = np.zeros_like(fluid)
        for shift in (-4, 4):
            ring |= np.roll(fluid, shift, axis=1) | np.roll(fluid, shift, axis=2)
        ring &= ~fluid
        rows = np.arange(reference.shape[1])[None, :, None]
        irf = reference == render.IRF
        sub = (reference == render.SRF) | (reference == render.PED)
        irf_bottom = np.where(irf, rows, -1).max(axis=1)
        sub_top = np.where(sub, rows, reference.shape[1]).min(axis=1)
        both = irf.any(axis=1) & sub.any(axis=1)
        crop = slice((reference.shape[2] - 224) // 2, (reference.shape[2] + 224) // 2)
        return dict(
            fluid_bscans=render.fluid_bscans(reference),
            kinds={c: (reference == c).any(axis=(1, 2)) for c in render.FLUID_NAMES},
            fluid_mean={c: float(oct_volume[reference == c].mean()) if (reference == c).any() else None
                        for c in render.FLUID_NAMES},
            ring_mean=float(oct_volume[ring].mean()) if ring.any() else None,
            irf_above_sub=bool(np.all(irf_bottom[both] < sub_top[both])),
            outside_crop_only=int((fluid.any(axis=(1, 2)) & ~fluid[:, :, crop].any(axis=(1, 2))).sum()),
            p99=float(np.percentile(oct_volume[:, ::4, ::4], 99)),
            p50=float(np.percentile(oct_volume[:, ::4, ::4], 50)),
        )

    def test_fluid_fraction_and_dry_volumes(self, volumes):
        fractions = [v["fluid_bscans"].mean() for v in volumes]
        assert 0.4 <= np.mean(fractions) <= 0.8
        assert min(fractions) == 0.0  # Some volumes fully dry ...
        assert max(fractions) > 0.7  # ... and some mostly fluid.

    def test_every_fluid_kind_appears(self, volumes):
        for code in render.FLUID_NAMES:
            assert any(v["kinds"][code].any() for v in volumes), render.FLUID_NAMES[code]

    def test_fluid_comes_in_runs_of_bscans(self, volumes):
        for v in volumes:
            assert len(_runs(v["fluid_bscans"])) <= 1  # One contiguous run of fluid B-scans per volume.
            for flags in v["kinds"].values():
                assert all(n > 1 for n in _runs(flags))

    def test_irf_lies_above_srf_and_ped(self, volumes):
        assert all(v["irf_above_sub"] for v in volumes)

    def test_fluid_is_darker_than_the_tissue_around_it(self, volumes):
        for v in volumes:
            for code, mean in v["fluid_mean"].items():
                if mean is not None:
                    assert mean < 0.6 * v["ring_mean"], render.FLUID_NAMES[code]

    def test_some_fluid_lies_outside_the_central_crop(self, volumes):
        assert sum(v["outside_crop_only"] for v in volumes) > 0

    def test_intensities_use_the_uint16_range(self, volumes):
        for v in volumes:
            assert v["p99"] > 0.5 * 65535  # Bright bands survive the converter's linear v * 255 / 65535.
            assert v["p50"] < 0.2 * 65535  # Mostly dark vitreous and deep tissue, as in real scans.


def test_render_example_writes_the_bscan_beside_its_coloured_reference(tmp_path):
    from PIL import Image

    oct_volume, reference = render.make_volume(np.random.default_rng(1), 5, 64, 96, np.uint16, fluid_quantile=0.99)
    path = tmp_path / "example.png"
    render.render_example(oct_volume, reference, render.example_index(reference), path)
    with Image.open(path) as image:
        assert image.width > image.height > 64


def test_cli_writes_dataset_and_summary(tmp_path):
    result = _tool(f"--output_dir={tmp_path}", "--vendor=topcon", "--volumes=2", "--seed=3", "--bscans=4",
                   "--height=32", "--width=32", f"--render_example={tmp_path / 'example.png'}")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "RETOUCH-TrainingSet-Topcon")) == ["TRAIN049", "TRAIN050"]
    assert "topcon: 2 volumes (TRAIN049-TRAIN050), 8 B-scans" in result.stdout
    assert "2/2" in result.stderr
    assert (tmp_path / "example.png").stat().st_size > 0


@pytest.mark.parametrize("flag", ["--volumes=0", "--bscans=0", "--height=-5", "--width=8", "--fluid_fraction=1.5"])
def test_cli_bad_flags_fail_with_one_line(tmp_path, flag):
    result = _tool(f"--output_dir={tmp_path}", "--bscans=2", "--height=16", "--width=16", flag)
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "make_synthetic:" in result.stderr
    assert not (tmp_path / "RETOUCH-TrainingSet-Spectralis").exists()


def test_cli_unknown_vendor_fails(tmp_path):
    result = _tool(f"--output_dir={tmp_path}", "--vendor=nidek")
    assert result.returncode != 0 and "vendor" in result.stderr


def test_cli_refuses_non_empty_vendor_folder_without_touching_it(tmp_path):
    args = [f"--output_dir={tmp_path}", "--volumes=1", "--bscans=2", "--height=16", "--width=16"]
    assert _tool(*args).returncode == 0
    before = _digest(tmp_path)
    result = _tool(*args, "--seed=1")
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "not empty" in result.stderr
    assert _digest(tmp_path) == before
