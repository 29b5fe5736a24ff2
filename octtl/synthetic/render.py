"""Synthetic RETOUCH-like OCT volumes, so the pipeline can be built and tested without the real data.

A volume is a stack of B-scans through a layered retina with a foveal pit, vessel shadows, a textured choroid and
multiplicative speckle, plus the three RETOUCH fluid kinds drawn as 3-D pockets: IRF (code 1) cysts inside the
retina, SRF (code 2) domes between photoreceptors and RPE, PED (code 3) domes under the lifted RPE. The reference
volume marks exactly the voxels of each pocket with its code. octtl.synthetic.retina lays out the anatomy in millimetres;
this module renders it into B-scans of any pixel grid and writes RETOUCH-style datasets.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from typing import Callable

import numpy as np
import SimpleITK as sitk

from octtl import outputs
from octtl.errors import InputError

from octtl.synthetic import retina
from octtl.synthetic.retina import IRF, PED, SRF  # The reference volumes' fluid codes.

FLUID_NAMES = {IRF: "IRF", SRF: "SRF", PED: "PED"}
# Colours of the RETOUCH figures: IRF red, SRF green, PED blue.
FLUID_COLOURS = {IRF: (0.95, 0.15, 0.15), SRF: (0.2, 0.85, 0.2), PED: (0.2, 0.45, 1.0)}

MIN_ROWS = 16
MIN_COLUMNS = 16


@dataclasses.dataclass(frozen=True)
class Vendor:
    """How one RETOUCH vendor's training set is laid out and stored."""

    folder: str
    first_id: int
    id_count: int  # Volumes of this vendor in the RETOUCH training set; write_dataset may number past it.
    bscans: int
    height: int
    width: int
    dtype: np.dtype
    spacing: tuple[float, float, float]  # SimpleITK order, mm: (column, axial row, between B-scans).
    speckle: float  # Log-domain speckle strength: Spectralis averages frames, the others do not.


VENDORS = {
    "cirrus": Vendor("RETOUCH-TrainingSet-Cirrus", 1, 24, 128, 1024, 512, np.dtype(np.uint8),
                     (0.0117, 0.00195, 0.0472), 0.10),
    "spectralis": Vendor("RETOUCH-TrainingSet-Spectralis", 25, 24, 49, 496, 512, np.dtype(np.uint16),
                         (0.0113, 0.0039, 0.12), 0.075),
    "topcon": Vendor("RETOUCH-TrainingSet-Topcon", 49, 22, 128, 885, 512, np.dtype(np.uint8),
                     (0.0117, 0.0026, 0.0472), 0.095),
}


@dataclasses.dataclass(frozen=True)
class VolumeSummary:
    """What write_dataset reports for each volume it has written."""

    path: pathlib.Path  # Where the volume lies once the whole vendor folder is in place.
    bscans: int
    fluid_bscans: int
    fluid_voxels: dict[int, int]


def volume_id(vendor: str, index: int) -> str:
    """RETOUCH name of a vendor's index-th volume (0-based); past the vendor's range the numbering continues."""
    return f"TRAIN{VENDORS[vendor].first_id + index:03d}"


def _check_size(bscans: int, height: int, width: int) -> None:
    if bscans < 1:
        raise InputError(f"--bscans={bscans}: must be at least 1")
    if height < MIN_ROWS:
        raise InputError(f"--height={height}: must be at least {MIN_ROWS} rows")
    if width < MIN_COLUMNS:
        raise InputError(f"--width={width}: must be at least {MIN_COLUMNS} columns")


def _wet_fraction(quantile: float, fluid_fraction: float) -> float:
    """Fraction of a volume's B-scans to fill with fluid, as the quantile of a dry-or-wet mixture.

    Wet volumes average a little above fluid_fraction and a share of volumes stays fully dry, so a dataset's
    mean is fluid_fraction while single volumes range from dry to almost all fluid.
    """
    wet_mean = min(1.0, fluid_fraction + 0.15)
    dry_share = 1.0 - fluid_fraction / wet_mean
    if quantile < dry_share:
        return 0.0
    spread = min(0.2, 1.0 - wet_mean, wet_mean)
    return wet_mean - spread + 2.0 * spread * (quantile - dry_share) / (1.0 - dry_share)


def make_volume(rng: np.random.Generator, bscans: int, height: int, width: int, dtype=np.uint16,
                fluid_fraction: float = 0.6, *, fluid_quantile: float | None = None,
                speckle: float = 0.08) -> tuple[np.ndarray, np.ndarray]:
    """Draws one OCT volume and its reference, both (B-scan, row, column).

    Args:
        rng: the volume's own generator; everything drawn comes from it.
        bscans, height, width: volume shape; at least 1 B-scan, 16 rows and 16 columns.
        dtype: np.uint8 (0..255) or np.uint16 (0..65535) for the OCT intensities.
        fluid_fraction: expected share of B-scans with fluid over many volumes; single volumes vary from dry to
            nearly all fluid.
        fluid_quantile: where this volume falls in that dry-to-wet spread (0..1); None draws it from rng.
            write_dataset passes a low-discrepancy sequence so small datasets still hit fluid_fraction.
        speckle: standard deviation of the speckle in display units (0..1).

    Returns:
        (oct, reference): oct in dtype, reference uint8 with 0 none, 1 IRF, 2 SRF, 3 PED.
    """
    _check_size(bscans, height, width)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.uint8), np.dtype(np.uint16)):
        raise ValueError(f"dtype must be uint8 or uint16, got {dtype}")
    if not 0.0 <= fluid_fraction <= 1.0:
        raise InputError(f"--fluid_fraction={fluid_fraction}: must be in [0, 1]")
    quantile = rng.random() if fluid_quantile is None else float(fluid_quantile)
    layout = retina.Layout(rng, bscans, height, width, _wet_fraction(quantile, fluid_fraction))
    renderer = _Renderer(rng, layout, speckle)
    out = np.empty((bscans, height, width), dtype)
    ref = np.zeros((bscans, height, width), np.uint8)
    for b in range(bscans):
        renderer.bscan(rng, b, out[b], ref[b])
    return out, ref


def _grey_levels(rng: np.random.Generator, layout: retina.Layout) -> np.ndarray:
    """Each layer's mean brightness in this volume: the scanner's gain and contrast, and the fluid's own levels."""
    levels = retina.LEVELS * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)  # Per-scan gain and contrast.
    levels[retina.VITREOUS] = retina.LEVELS[retina.VITREOUS]  # The noise floor does not follow the tissue gain.
    srf_level = next((les.level for les in layout.lesions if les.kind == SRF), 0.08)
    ped_level = next((les.level for les in layout.lesions if les.kind == PED), 0.15)
    levels[retina.SUBRETINAL], levels[retina.SUB_RPE] = srf_level, ped_level
    return levels.astype(np.float32)


def _choroid_textures(rng: np.random.Generator, bscans: int, height: int, width: int) -> list:
    """Per choroid texture: its (B-scan, axial knot, column) field, and the spline taps and weights over the rows."""
    # Choroid texture: smooth noise on mm grids shared by neighbouring B-scans; small vessels (Sattler's layer) under
    # the choriocapillaris, large ones (Haller's layer) deeper.
    # Interpolated with gathers rather than matrix products: a threaded BLAS spins on small products and
    # slows the whole run down several-fold on a busy machine.
    textures = []
    for axial_mm, lateral_mm in ((0.025, 0.05), (0.06, 0.14)):
        knots = rng.standard_normal((int(retina.SCAN_MM / (2 * lateral_mm)) + 4, int(retina.DEPTH_MM / axial_mm) + 4,
                                     int(retina.SCAN_MM / lateral_mm) + 4)).astype(np.float32)
        taps, weights = _spline_rows(bscans, knots.shape[0])
        en_face = sum(weights[:, j, None, None] * knots[taps[:, j]] for j in range(4))
        taps, weights = _spline_rows(width, knots.shape[2])
        en_face = sum(weights[:, j] * en_face[:, :, taps[:, j]] for j in range(4))  # (B-scan, axial knot, column)
        textures.append((en_face, *_spline_rows(height, knots.shape[1])))
    return textures


def _spline_rows(n_out: int, n_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline taps and weights from n_knots to n_out samples, weights scaled to unit norm (unit variance)."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_knots - 3) + 1.0
    first = np.floor(pos).astype(np.intp)
    t = (pos - first)[:, None]
    weights = np.concatenate([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4, -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1, t ** 3],
                             axis=1)
    weights /= np.sqrt((weights ** 2).sum(axis=1, keepdims=True))
    return first[:, None] + np.arange(-1, 3)[None, :], weights.astype(np.float32)


class _Renderer:
    """Draws the B-scans of one layout with what they all share: grey levels, choroid textures, vessels, gains.

    Its constructor makes the volume's draws that follow the layout's; each B-scan then draws its own speckle.
    """

    def __init__(self, rng: np.random.Generator, layout: retina.Layout, speckle: float):
        self.layout, self.speckle = layout, speckle
        height = layout.height
        self.levels = _grey_levels(rng, layout)
        self.textures = _choroid_textures(rng, layout.bscans, height, layout.width)
        self.shadow, self.shadow_row, self.blobs = retina.vessel_maps(layout)
        self.gain = rng.normal(0.0, 0.02, layout.bscans)
        self.chor_bright = rng.uniform(0.44, 0.54)
        self.rows = np.arange(height, dtype=np.float32)[:, None]
        self.cols = np.arange(layout.width)
        self.vignette = (-0.05 * (2 * layout.x / retina.SCAN_MM - 1) ** 2).astype(np.float32)[None, :]
        self.rolloff = (-0.06 * self.rows / height).astype(np.float32)
        self.top_rows = np.clip(np.ceil(layout.tops), 0, height).astype(np.intp)
        self.choroid_rows = np.floor(layout.tops[retina.CHOROID - 1].min(axis=1)).clip(0, height - 1).astype(int)

    def bscan(self, rng: np.random.Generator, b: int, pixels: np.ndarray, reference: np.ndarray) -> None:
        """Draws B-scan b into pixels (OCT intensities) and its fluid codes into reference (all zero before)."""
        label = self._labels(b)
        base = self.levels[label]
        self._choroid(b, label, base)
        cyst = self._cysts(b, base)
        base[1:-1] = 0.25 * base[:-2] + 0.5 * base[1:-1] + 0.25 * base[2:]  # Axial resolution softens edges.
        self._vessels(b, base)
        height, width = base.shape
        base += (retina.speckle(rng, height, width) * np.float32(self.speckle) + self.vignette + self.rolloff
                 + np.float32(self.gain[b]))
        np.clip(base, 0.0, 1.0, out=base)
        pixels[...] = np.rint(base * np.float32(np.iinfo(pixels.dtype).max))
        reference[cyst] = IRF
        reference[label == retina.SUBRETINAL] = SRF
        reference[label == retina.SUB_RPE] = PED

    def _labels(self, b: int) -> np.ndarray:
        """The layer label (retina.VITREOUS to retina.SCLERA) of each pixel of B-scan b."""
        height, width = self.layout.height, self.layout.width
        # Each boundary adds one to the label of every row at and below it.
        events = np.zeros((height + 1, width), np.int8)
        for k in range(self.top_rows.shape[0]):
            events[self.top_rows[k, b], self.cols] += 1
        return np.cumsum(events, axis=0, dtype=np.int8)[:height]

    def _choroid(self, b: int, label: np.ndarray, base: np.ndarray) -> None:
        """Paints the choroid and sclera of B-scan b into base."""
        layout, rows = self.layout, self.rows
        # Choroid: bright choriocapillaris, dark vessel lumens, both fading into the sclera with depth.
        r0 = self.choroid_rows[b]
        depth = (rows[r0:] - layout.tops[retina.CHOROID - 1, b][None, :]) * np.float32(1.0 / layout.px)
        small, large = (sum(weights[r0:, j, None] * en_face[b][taps[r0:, j]] for j in range(4))
                        for en_face, taps, weights in self.textures)
        thickness = layout.choroid_mm[b][None, :].astype(np.float32)
        frac = np.clip(depth / thickness, 0.0, 1.0)
        texture = small + frac * (large - small)
        lumen = np.clip(texture - 0.05, 0.0, 1.0)
        below = depth - thickness
        choroid = self.chor_bright * (1.0 - 0.5 * frac) * (
            1.0 - 0.65 * lumen * np.clip(depth * np.float32(1 / 0.03), 0.0, 1.0))
        sclera = 0.08 * np.exp(np.clip(below, 0.0, None) * np.float32(-1 / 0.2)) + 0.03 * texture
        deep = np.clip(below * np.float32(1 / 0.15) + 0.5, 0.0, 1.0)
        base[r0:] = np.where(label[r0:] >= retina.CHOROID, choroid + deep * (sclera - choroid), base[r0:])

    def _cysts(self, b: int, base: np.ndarray) -> np.ndarray:
        """Paints the IRF cysts of B-scan b into base; returns where they are."""
        height = self.layout.height
        cyst = np.zeros(base.shape, bool)
        for les, top, bottom in self.layout.cysts:
            box = _box(top[b], bottom[b], height)
            if box is not None:
                rs, cs, inside = box
                base[rs, cs][inside] = les.level
                cyst[rs, cs] |= inside
        return cyst

    def _vessels(self, b: int, base: np.ndarray) -> None:
        """Adds the bright walls of B-scan b's vessels to base, and darkens the rows their shadows fall on."""
        for top, bottom, wall in self.blobs[b]:
            box = _box(top, bottom, self.layout.height)
            if box is not None:
                rs, cs, inside = box
                base[rs, cs] += inside * wall[cs]
        base -= self.shadow[b][None, :] * (self.rows >= self.shadow_row[b][None, :])


def _box(top: np.ndarray, bottom: np.ndarray, height: int):
    """Bounding box and mask of rows [ceil(top), ceil(bottom)) per column, or None when no row is covered."""
    r0 = np.clip(np.ceil(top), 0, height).astype(np.intp)
    r1 = np.clip(np.ceil(bottom), 0, height).astype(np.intp)
    on = np.flatnonzero(r1 > r0)
    if on.size == 0:
        return None
    cs = slice(on[0], on[-1] + 1)
    lo, hi = r0[on].min(), r1[on].max()
    span = np.arange(lo, hi)[:, None]
    return slice(lo, hi), cs, (span >= r0[None, cs]) & (span < r1[None, cs])


def fluid_bscans(reference: np.ndarray) -> np.ndarray:
    """Per-B-scan fluid flag (any IRF, SRF or PED voxel), the label the classifiers learn."""
    return reference.reshape(reference.shape[0], -1).max(axis=1) > 0


def _write_volume(folder: pathlib.Path, oct_volume: np.ndarray, reference: np.ndarray,
                  spacing: tuple[float, float, float]) -> None:
    folder.mkdir(parents=True)
    for name, array in (("oct", oct_volume), ("reference", reference)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(folder / f"{name}.mhd"), useCompression=False)


def fluid_quantiles(seed: int, count: int) -> np.ndarray:
    """Golden-ratio sequence of volume quantiles: volume k gets the same value whatever count is."""
    offset = np.random.SeedSequence(seed).generate_state(1)[0] / 2.0 ** 32
    return (offset + np.arange(count) * 0.6180339887498949) % 1.0


def write_dataset(output_dir, vendor: str = "spectralis", volumes: int = 24, seed: int = 0,
                  bscans: int | None = None, height: int | None = None, width: int | None = None,
                  fluid_fraction: float = 0.6,
                  on_volume: Callable[[int, int, VolumeSummary], None] | None = None) -> list[pathlib.Path]:
    """Writes a RETOUCH-style training set for one vendor: output_dir/<vendor folder>/TRAINnnn/{oct,reference}.mhd.

    Volumes are numbered from the vendor's first RETOUCH id; asking for more volumes than the vendor has in
    RETOUCH continues the numbering (the 25th Spectralis volume is TRAIN049). Volume k is drawn from its own
    child seed, so it is byte-identical whatever the number of volumes. The vendor folder is built in a temporary
    folder inside output_dir and renamed into place only when complete.

    Args:
        output_dir: parent folder; created if missing. Its vendor folder must be absent or empty.
        vendor: key of VENDORS.
        volumes: number of volumes, at least 1.
        seed: dataset seed.
        bscans, height, width: override the vendor's volume shape (the header spacing stays the vendor's).
        fluid_fraction: target share of B-scans with fluid.
        on_volume: called as on_volume(done, volumes, summary) after each volume, for progress reports.

    Returns:
        The volume folders written, in id order.

    Raises:
        InputError: bad vendor, count or shape (naming the flag), or a vendor folder that already holds files.
    """
    if vendor not in VENDORS:
        raise InputError(f"--vendor={vendor}: unknown; expected one of {', '.join(VENDORS)}")
    spec = VENDORS[vendor]
    if volumes < 1:
        raise InputError(f"--volumes={volumes}: must be at least 1")
    if seed < 0:
        raise InputError(f"--seed={seed}: must be non-negative")
    shape = (spec.bscans if bscans is None else bscans, spec.height if height is None else height,
             spec.width if width is None else width)
    _check_size(*shape)
    if not 0.0 <= fluid_fraction <= 1.0:
        raise InputError(f"--fluid_fraction={fluid_fraction}: must be in [0, 1]")
    output_dir = pathlib.Path(output_dir)
    final = output_dir / spec.folder
    if outputs.is_occupied(final):
        raise InputError(f"{final} already exists and is not empty")

    staging = outputs.staging_dir(final, "--output_dir")
    try:
        built = staging / spec.folder
        names = []
        vendor_key = list(VENDORS).index(vendor)
        quantiles = fluid_quantiles(seed, volumes)
        for k in range(volumes):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(vendor_key, k)))
            oct_volume, reference = make_volume(rng, *shape, spec.dtype, fluid_fraction,
                                                fluid_quantile=quantiles[k], speckle=spec.speckle)
            names.append(volume_id(vendor, k))
            _write_volume(built / names[-1], oct_volume, reference, spec.spacing)
            if on_volume is not None:
                counts = np.bincount(reference.ravel(), minlength=4)
                on_volume(k + 1, volumes, VolumeSummary(final / names[-1], shape[0],
                                                        int(fluid_bscans(reference).sum()),
                                                        {c: int(counts[c]) for c in FLUID_NAMES}))
        outputs.publish(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [final / name for name in names]


def example_score(mask: np.ndarray) -> tuple[int, int]:
    """How telling a B-scan's reference is for a figure: fluid kinds clearly present, then fluid voxels."""
    counts = np.bincount(mask.ravel(), minlength=4)[1:]
    return int((counts >= max(20, mask.size // 2000)).sum()), int(counts.sum())


def example_index(reference: np.ndarray) -> int:
    """The B-scan of a volume that example_score rates highest."""
    return max(range(reference.shape[0]), key=lambda i: example_score(reference[i]))


def render_example(oct_volume: np.ndarray, reference: np.ndarray, index: int, path) -> None:
    """Saves B-scan `index` beside its reference drawn in colour over it, with an IRF/SRF/PED legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    bscan = oct_volume[index].astype(np.float32) / np.iinfo(oct_volume.dtype).max  # The converter's linear rule.
    mask = reference[index]
    overlay = np.repeat(bscan[:, :, None], 3, axis=2)
    for code, colour in FLUID_COLOURS.items():
        overlay[mask == code] = 0.45 * overlay[mask == code] + 0.55 * np.array(colour, np.float32)
    height, width = bscan.shape
    fig = Figure(figsize=(2 * width / 100 + 0.4, height / 100 + 0.7), dpi=100)
    FigureCanvasAgg(fig)
    for i, (image, title) in enumerate(((bscan, f"B-scan {index}"), (overlay, "reference"))):
        ax = fig.add_axes((0.01 + 0.5 * i, 0.02, 0.48, 0.88))
        ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    present = [c for c in FLUID_NAMES if (mask == c).any()] or list(FLUID_NAMES)
    fig.legend(handles=[Patch(color=FLUID_COLOURS[c], label=FLUID_NAMES[c]) for c in present],
               loc="upper right", ncol=len(present), fontsize=9, frameon=False)
    fig.savefig(str(path))
