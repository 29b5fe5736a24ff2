"""Synthetic RETOUCH-like OCT volumes, so the pipeline can be built and tested without the real data.

A volume is a stack of B-scans through a layered retina with a foveal pit, vessel shadows, a textured choroid and
multiplicative speckle, plus the three RETOUCH fluid kinds drawn as 3-D pockets: IRF (code 1) cysts inside the
retina, SRF (code 2) domes between photoreceptors and RPE, PED (code 3) domes under the lifted RPE. The reference
volume marks exactly the voxels of each pocket with its code. Anatomy is laid out in millimetres over a nominal
6 x 6 mm scan with about 2 mm of depth, whatever the pixel grid, so small test volumes keep the same look.
"""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
from typing import Callable

import numpy as np
import SimpleITK as sitk

from octtl import outputs

IRF, SRF, PED = 1, 2, 3
FLUID_NAMES = {IRF: "IRF", SRF: "SRF", PED: "PED"}
# Colours of the RETOUCH figures: IRF red, SRF green, PED blue.
FLUID_COLOURS = {IRF: (0.95, 0.15, 0.15), SRF: (0.2, 0.85, 0.2), PED: (0.2, 0.45, 1.0)}

MIN_ROWS = 16
MIN_COLUMNS = 16

_SCAN_MM = 6.0  # Lateral extent and extent across B-scans of every vendor's macular cube.
_DEPTH_MM = 2.0  # Nominal axial field of view: anatomy is scaled to the row count, not to the header spacing.


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


# Layer labels, top to bottom. Each boundary map in _Layout.tops starts the label of the same index.
(_VITREOUS, _ILM, _RNFL, _GCL, _IPL, _INL, _OPL, _ONL, _ELM, _MZ, _EZ, _OS, _IZ, _SRF, _RPE, _PED, _BM, _CHOROID,
 _SCLERA) = range(19)
# Mean display brightness (0..1, log-compressed) of each layer; fluid, choroid and sclera are set per volume.
# The vitreous sits below black so that only the brightest noise-floor speckle shows.
_LEVELS = np.array([-0.08, 0.62, 0.74, 0.40, 0.55, 0.30, 0.54, 0.25, 0.46, 0.25, 0.80, 0.37, 0.62, 0.0, 0.90, 0.0,
                    0.72, 0.0, 0.0], np.float32)
# Mean and spread of log(speckle) for the 3 x 2 smoothed exponential field drawn in _speckle.
_LOG_SPECKLE_MEAN = -0.0944
_LOG_SPECKLE_STD = 0.4458


@dataclasses.dataclass
class _Lesion:
    """One ellipsoid-ish pocket, in mm over the en-face plane; height is the axial size at its centre."""

    kind: int
    x0: float
    z0: float
    rx: float
    rz: float
    height: float
    power: float  # Profile exponent: 0.5 gives an ellipse, 1 and above a tapering dome.
    shear: float  # Lateral drift per mm across B-scans, so pockets are not all aligned with the grid.
    depth: float = 0.5  # IRF only: where in the nuclear layers the cyst sits (0 at the ELM, 1 at the IPL).
    level: float = 0.1

    def profile(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        q = ((x - self.x0 - self.shear * (z - self.z0)) / self.rx) ** 2 + ((z - self.z0) / self.rz) ** 2
        return self.height * np.clip(1.0 - q, 0.0, None) ** self.power

    def swelling(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """A wider, lower, smoother dome: the tissue thickening around a cyst."""
        rx, rz = 2.2 * self.rx + 0.1, 1.4 * self.rz + 0.1
        q = ((x - self.x0 - self.shear * (z - self.z0)) / rx) ** 2 + ((z - self.z0) / rz) ** 2
        return 0.6 * self.height * np.clip(1.0 - q, 0.0, None) ** 1.2


@dataclasses.dataclass
class _Vessel:
    """A retinal vessel crossing the scan: its shadow falls on the same columns of neighbouring B-scans."""

    xa: float
    za: float
    zb: float
    slope: float
    curve: float
    width: float
    depth: float
    shadow: float

    def centre(self, z: np.ndarray) -> np.ndarray:
        return self.xa + self.slope * (z - self.za) + self.curve * (z - self.za) ** 2


def _check_size(bscans: int, height: int, width: int) -> None:
    if bscans < 1:
        raise ValueError(f"bscans must be at least 1, got {bscans}")
    if height < MIN_ROWS:
        raise ValueError(f"height must be at least {MIN_ROWS} rows, got {height}")
    if width < MIN_COLUMNS:
        raise ValueError(f"width must be at least {MIN_COLUMNS} columns, got {width}")


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


def _spline_rows(n_out: int, n_knots: int) -> tuple[np.ndarray, np.ndarray]:
    """Cubic B-spline taps and weights from n_knots to n_out samples, weights scaled to unit norm (unit variance)."""
    pos = (np.arange(n_out) + 0.5) / n_out * (n_knots - 3) + 1.0
    first = np.floor(pos).astype(np.intp)
    t = (pos - first)[:, None]
    weights = np.concatenate([(1 - t) ** 3, 3 * t ** 3 - 6 * t ** 2 + 4, -3 * t ** 3 + 3 * t ** 2 + 3 * t + 1, t ** 3],
                             axis=1)
    weights /= np.sqrt((weights ** 2).sum(axis=1, keepdims=True))
    return first[:, None] + np.arange(-1, 3)[None, :], weights.astype(np.float32)


class _Layout:
    """Per-volume anatomy: layer boundary rows and lesion maps over the (B-scan, column) grid."""

    def __init__(self, rng: np.random.Generator, bscans: int, height: int, width: int, wet: float):
        self.bscans, self.height, self.width = bscans, height, width
        self.px = height / _DEPTH_MM  # Rows per mm.
        x = (np.arange(width) + 0.5) / width * _SCAN_MM
        z = (np.arange(bscans) + 0.5) / bscans * _SCAN_MM
        self.x, self.z = x, z
        xx, zz = np.meshgrid(x, z)  # (B, W) en-face grid in mm.
        self.xx, self.zz = xx, zz

        # Fixation is never perfect: the fovea and the bowl of the eye sit a little off centre.
        self.xf = _SCAN_MM / 2 + float(np.clip(rng.normal(0.0, 0.18), -0.45, 0.45))
        self.zf = _SCAN_MM / 2 + float(np.clip(rng.normal(0.0, 0.1), -0.25, 0.25))
        r = np.hypot(xx - self.xf, zz - self.zf)
        self.r = r
        pit_radius = rng.uniform(0.35, 0.5)
        pit = 1.0 - np.exp(-((r / pit_radius) ** 2))  # Inner layers vanish in the foveal pit.
        rim = 1.0 + 0.3 * np.exp(-(((r - 1.1) / 0.6) ** 2))  # Ganglion cells pile up on the parafoveal rim.
        nasal = rng.choice([-1.0, 1.0]) * (xx - self.xf)
        scale = rng.uniform(0.9, 1.1)
        mm = {
            _ILM: np.full_like(r, 0.006),
            _RNFL: pit * (0.012 + 0.03 / (1.0 + np.exp(-(nasal - 1.2) / 0.5))
                          + 0.014 * np.clip((np.abs(zz - self.zf) / 2.5) ** 2, 0, 1)),
            _GCL: pit * rim * 0.042 * (1.0 - 0.25 * np.clip((r - 1.5) / 2.0, 0, 1)),
            _IPL: pit * (1.0 + 0.5 * (rim - 1.0)) * 0.034,
            _INL: pit * 0.033,
            _OPL: (0.3 + 0.7 * pit) * 0.024,
            _ONL: 0.062 + 0.04 * np.exp(-((r / 0.45) ** 2)),
            _ELM: np.full_like(r, 0.005),
            _MZ: np.full_like(r, 0.014),
            _EZ: np.full_like(r, 0.012),
            _OS: 0.02 + 0.012 * np.exp(-((r / 0.4) ** 2)),
            _IZ: np.full_like(r, 0.008),
            _RPE: np.full_like(r, 0.018),
            _BM: np.full_like(r, 0.007),
        }
        thick = {k: v * scale * self.px for k, v in mm.items()}

        wet_bscans = self._wet_interval(rng, wet)
        self.lesions = self._plan_lesions(rng, wet_bscans)
        self.vessels = self._plan_vessels(rng)

        srf = np.zeros_like(r)
        ped = np.zeros_like(r)
        cysts = sorted((les for les in self.lesions if les.kind == IRF), key=lambda les: les.depth)
        cyst_maps = [les.profile(xx, zz) * self.px for les in cysts]
        # Half of a cyst's height displaces the layers around it; the other half replaces tissue, as the layers
        # a cyst sits in look interrupted rather than stacked above and below it.
        gaps = [0.5 * m for m in cyst_maps]
        # Edema thickens the retina well beyond the cysts, so the surface bulges smoothly instead of tenting.
        edema = sum((les.swelling(xx, zz) * self.px for les in cysts), np.zeros_like(r))
        for les in self.lesions:
            if les.kind == SRF:
                srf += les.profile(xx, zz) * self.px
            elif les.kind == PED:
                ped += les.profile(xx, zz) * self.px
        fluid = sum(gaps, np.zeros_like(r))
        swell = np.maximum(edema, fluid)
        # Keep the retina inside the image: real scans of severe edema are re-centred by the operator.
        cap = 0.45 * self.px
        excess = float((srf + ped + swell).max())
        if excess > cap:
            shrink = cap / excess
            srf, ped, fluid, swell = srf * shrink, ped * shrink, fluid * shrink, swell * shrink
            cyst_maps = [m * shrink for m in cyst_maps]
            gaps = [m * shrink for m in gaps]

        # The bowl of the posterior pole: edges higher than the centre, tilted by the scan angle.
        xc = self.xf + rng.normal(0.0, 0.5)
        zc = self.zf + rng.normal(0.0, 0.5)
        bowl = rng.uniform(0.15, 0.4) * (((xx - xc) / _SCAN_MM) ** 2 + ((zz - zc) / _SCAN_MM) ** 2)
        tilt = rng.uniform(-0.06, 0.06) * (xx / _SCAN_MM - 0.5) + rng.uniform(-0.04, 0.04) * (zz / _SCAN_MM - 0.5)
        phase = rng.uniform(0, 2 * np.pi, 2)
        wobble = 0.006 * np.sin(2 * np.pi * xx / rng.uniform(2.5, 5.0) + phase[0]) * np.cos(
            2 * np.pi * zz / rng.uniform(3.0, 6.0) + phase[1])
        bm = height * (rng.uniform(0.6, 0.67) - bowl + tilt + wobble)

        tops = {_CHOROID: bm}
        tops[_BM] = bm - thick[_BM]
        tops[_PED] = tops[_BM] - ped
        tops[_RPE] = tops[_PED] - thick[_RPE]
        tops[_SRF] = tops[_RPE] - srf
        tops[_IZ] = tops[_SRF] - thick[_IZ]
        tops[_OS] = tops[_IZ] - thick[_OS]
        tops[_EZ] = tops[_OS] - thick[_EZ]
        tops[_MZ] = tops[_EZ] - thick[_MZ]
        tops[_ELM] = tops[_MZ] - thick[_ELM]
        # Cysts open gaps in the nuclear layers (ONL, OPL, INL): each boundary above a cyst's seat moves up by the
        # cyst's gap, and the tissue stretches to fill the rest of the swelling.
        host = thick[_ONL] + thick[_OPL] + thick[_INL]
        stretch = (host + swell - fluid) / host
        below = np.zeros_like(r)
        self.cysts = []
        for les, h, gap in zip(cysts, cyst_maps, gaps):
            seat = stretch * les.depth * host + below
            # Centred on its gap, so the cyst is an oval reaching into the tissue on both sides.
            low = np.maximum(seat + 0.5 * gap - 0.5 * h, 0.0)
            self.cysts.append((les, tops[_ELM] - (seat + 0.5 * gap + 0.5 * h), tops[_ELM] - low))
            below = below + gap

        def pushed(tissue: np.ndarray) -> np.ndarray:
            lift = sum((g * (les.depth * host < tissue) for les, g in zip(cysts, gaps)), np.zeros_like(r))
            return tops[_ELM] - stretch * tissue - lift

        tops[_ONL] = pushed(thick[_ONL])
        tops[_OPL] = pushed(thick[_ONL] + thick[_OPL])
        tops[_INL] = tops[_ELM] - host - swell
        tops[_IPL] = tops[_INL] - thick[_IPL]
        tops[_GCL] = tops[_IPL] - thick[_GCL]
        tops[_RNFL] = tops[_GCL] - thick[_RNFL]
        tops[_ILM] = tops[_RNFL] - thick[_ILM]
        # Severe swelling would leave the image: move the whole fundus down as a scan operator would.
        shift = max(0.0, 0.04 * height - float(tops[_ILM].min()))
        shift = min(shift, max(0.0, 0.85 * height - float(bm.max())))
        self.choroid_mm = rng.uniform(0.15, 0.32) + 0.06 * np.exp(-((r / 1.5) ** 2))
        tops[_SCLERA] = bm + self.choroid_mm * self.px
        self.tops = np.stack([tops[k] + shift for k in range(_ILM, _SCLERA + 1)])  # (18, B, W)
        self.cysts = [(les, top + shift, bottom + shift) for les, top, bottom in self.cysts]

    def _wet_interval(self, rng: np.random.Generator, wet: float) -> tuple[int, int]:
        """The run of B-scans [first, last) that will hold fluid, centred near the fovea."""
        count = int(round(wet * self.bscans))
        if wet > 0:
            count = max(count, min(3, self.bscans))
        centre = self.zf / _SCAN_MM * self.bscans + rng.normal(0.0, 0.1 * self.bscans)
        first = int(np.clip(round(centre - count / 2), 0, self.bscans - count))
        return first, first + count

    def _plan_lesions(self, rng: np.random.Generator, wet_bscans: tuple[int, int]) -> list[_Lesion]:
        first, last = wet_bscans
        if last <= first:
            return []
        step = _SCAN_MM / self.bscans
        lo, hi = first * step, last * step
        kinds = [k for k, p in ((IRF, 0.8), (SRF, 0.5), (PED, 0.35)) if rng.random() < p] or [IRF]
        n_segments = max(1, int(round((hi - lo) / rng.uniform(1.5, 3.0))))
        cuts = np.linspace(lo, hi, n_segments + 1)
        cuts[1:-1] += rng.uniform(-0.25, 0.25, n_segments - 1) * (hi - lo) / n_segments
        order = list(rng.permutation(kinds))
        segment_kinds = [order[i % len(order)] for i in range(n_segments)]
        segment_kinds += order[n_segments:]  # Kinds left over share a segment with another.
        lesions = []
        for i, kind in enumerate(segment_kinds):
            a, b = cuts[i % n_segments], cuts[i % n_segments + 1]
            if i >= n_segments:
                a, b = lo + rng.uniform(0, 0.3) * (hi - lo), hi - rng.uniform(0, 0.3) * (hi - lo)
            # Overlap segments a little, and reach 0.35 B-scan past the last wet B-scan centre so the run is covered.
            a, b = max(lo, a - 0.2), min(hi, b + 0.2)
            z0, rz = (a + b) / 2, (b - a) / 2 + 0.35 * step
            peripheral = rng.random() < 0.2
            lesions += self._lesion(rng, kind, z0, rz, peripheral, main=True)
            if kind == IRF:
                lesions += self._cluster(rng, z0, rz, lo, hi, step, lesions[-1].x0)
        if rng.random() < 0.35:
            rz = rng.uniform(min(1.6 * step, (hi - lo) / 2), max(1.6 * step, (hi - lo) / 2))
            rz = min(rz, (hi - lo) / 2 + 0.35 * step)
            z0 = rng.uniform(lo + rz - 0.35 * step, max(lo + rz - 0.35 * step, hi - rz + 0.35 * step))
            kind = kinds[int(rng.integers(len(kinds)))]
            lesions += self._lesion(rng, kind, z0, rz, peripheral=True, main=False)
            if kind == IRF:
                lesions += self._cluster(rng, z0, rz, lo, hi, step, lesions[-1].x0)
        return lesions

    def _lateral(self, rng: np.random.Generator, peripheral: bool, radius: float) -> tuple[float, float]:
        """Lesion centre and lateral radius; peripheral lesions stay clear of a central 224/512 crop."""
        if not peripheral:
            return float(np.clip(self.xf + rng.normal(0.0, 0.5), 0.6, _SCAN_MM - 0.6)), radius
        crop = 0.5 * _SCAN_MM * 224 / 512
        side = rng.choice([-1.0, 1.0])
        x0 = _SCAN_MM / 2 + side * rng.uniform(crop + 0.3, _SCAN_MM / 2 - 0.2)
        return float(x0), float(min(radius, abs(x0 - _SCAN_MM / 2) - crop + 0.1))

    def _lesion(self, rng, kind, z0, rz, peripheral, main) -> list[_Lesion]:
        shear = rng.normal(0.0, 0.15)
        if kind == SRF:
            x0, rx = self._lateral(rng, peripheral, rng.uniform(0.4, 1.6))
            return [_Lesion(SRF, x0, z0, rx, rz, rng.uniform(0.04, 0.28), rng.uniform(0.8, 1.5), shear,
                            level=rng.uniform(-0.02, 0.08))]
        if kind == PED:
            x0, rx = self._lateral(rng, peripheral, rng.uniform(0.4, 1.3))
            return [_Lesion(PED, x0, z0, rx, rz, rng.uniform(0.05, 0.28), rng.uniform(0.6, 1.1), shear,
                            level=rng.uniform(0.0, 0.22))]
        x0, rx = self._lateral(rng, peripheral, rng.uniform(0.08, 0.35) if main else rng.uniform(0.05, 0.2))
        # Raw B-scans stretch depth about 3x, so cysts that look round there are flat ovals in mm.
        height = min(0.3, 2 * rx * rng.uniform(0.25, 0.6))
        return [_Lesion(IRF, x0, z0, rx, rz, height, 0.5, shear, depth=rng.uniform(0.1, 0.7),
                        level=rng.uniform(-0.02, 0.09))]

    def _cluster(self, rng, z0, rz, lo, hi, step, x0) -> list[_Lesion]:
        """Small cysts around a main one, as in cystoid edema; each still spans a few B-scans."""
        cysts = []
        for _ in range(int(rng.integers(1, 9))):
            rx = rng.uniform(0.03, 0.12)
            rzc = min(max(1.6 * step, rx * rng.uniform(1.0, 3.0)), (hi - lo) / 2 + 0.35 * step)
            zc = rng.uniform(lo - 0.35 * step + rzc, max(lo - 0.35 * step + rzc, hi + 0.35 * step - rzc))
            xc = float(np.clip(x0 + rng.normal(0.0, 0.6), 0.1, _SCAN_MM - 0.1))
            cysts.append(_Lesion(IRF, xc, zc, rx, rzc, min(0.15, 2 * rx * rng.uniform(0.25, 0.7)), 0.5,
                                 rng.normal(0.0, 0.1), depth=rng.uniform(0.05, 0.95), level=rng.uniform(-0.02, 0.09)))
        return cysts

    def _plan_vessels(self, rng: np.random.Generator) -> list[_Vessel]:
        vessels = []
        for _ in range(int(rng.integers(5, 11))):
            za = rng.uniform(-1.0, 3.0)
            vessels.append(_Vessel(xa=rng.uniform(0.0, _SCAN_MM), za=za, zb=za + rng.uniform(2.5, 8.0),
                                   slope=rng.uniform(-0.5, 0.5), curve=rng.uniform(-0.08, 0.08),
                                   width=rng.uniform(0.035, 0.12), depth=rng.uniform(0.3, 0.7),
                                   shadow=rng.uniform(0.1, 0.22)))
        return vessels


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


def _speckle(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Log of fully developed speckle, smoothed over 3 rows x 2 columns like an OCT's resolution cell; unit variance."""
    field = rng.standard_exponential((height + 2, width + 1), dtype=np.float32)
    field = 0.25 * field[:-2] + 0.5 * field[1:-1] + 0.25 * field[2:]
    field = 0.5 * (field[:, :-1] + field[:, 1:])
    np.log(field, out=field)
    field -= _LOG_SPECKLE_MEAN
    field *= 1.0 / _LOG_SPECKLE_STD
    return field


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
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}")
    quantile = rng.random() if fluid_quantile is None else float(fluid_quantile)
    layout = _Layout(rng, bscans, height, width, _wet_fraction(quantile, fluid_fraction))

    levels = _LEVELS * rng.uniform(0.92, 1.08) + rng.uniform(-0.03, 0.03)  # Per-scan gain and contrast.
    levels[_VITREOUS] = _LEVELS[_VITREOUS]  # The noise floor does not follow the tissue gain.
    srf_level = next((les.level for les in layout.lesions if les.kind == SRF), 0.08)
    ped_level = next((les.level for les in layout.lesions if les.kind == PED), 0.15)
    levels[_SRF], levels[_PED] = srf_level, ped_level
    levels = levels.astype(np.float32)

    # Choroid texture: smooth noise on mm grids shared by neighbouring B-scans; small vessels (Sattler's layer) under
    # the choriocapillaris, large ones (Haller's layer) deeper.
    # Interpolated with gathers rather than matrix products: a threaded BLAS spins on small products and
    # slows the whole run down several-fold on a busy machine.
    textures = []
    for axial_mm, lateral_mm in ((0.025, 0.05), (0.06, 0.14)):
        knots = rng.standard_normal((int(_SCAN_MM / (2 * lateral_mm)) + 4, int(_DEPTH_MM / axial_mm) + 4,
                                     int(_SCAN_MM / lateral_mm) + 4)).astype(np.float32)
        taps, weights = _spline_rows(bscans, knots.shape[0])
        en_face = sum(weights[:, j, None, None] * knots[taps[:, j]] for j in range(4))
        taps, weights = _spline_rows(width, knots.shape[2])
        en_face = sum(weights[:, j] * en_face[:, :, taps[:, j]] for j in range(4))  # (B-scan, axial knot, column)
        textures.append((en_face, *_spline_rows(height, knots.shape[1])))

    shadow, shadow_row, blobs = _vessel_maps(layout)
    gain = rng.normal(0.0, 0.02, bscans)
    chor_bright = rng.uniform(0.44, 0.54)

    out = np.empty((bscans, height, width), dtype)
    ref = np.zeros((bscans, height, width), np.uint8)
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width)
    vignette = (-0.05 * (2 * layout.x / _SCAN_MM - 1) ** 2).astype(np.float32)[None, :]
    rolloff = (-0.06 * rows / height).astype(np.float32)
    top_rows = np.clip(np.ceil(layout.tops), 0, height).astype(np.intp)
    choroid_rows = np.floor(layout.tops[_CHOROID - 1].min(axis=1)).clip(0, height - 1).astype(int)
    for b in range(bscans):
        # Each boundary adds one to the label of every row at and below it.
        events = np.zeros((height + 1, width), np.int8)
        for k in range(top_rows.shape[0]):
            events[top_rows[k, b], cols] += 1
        label = np.cumsum(events, axis=0, dtype=np.int8)[:height]
        base = levels[label]

        # Choroid: bright choriocapillaris, dark vessel lumens, both fading into the sclera with depth.
        r0 = choroid_rows[b]
        depth = (rows[r0:] - layout.tops[_CHOROID - 1, b][None, :]) * np.float32(1.0 / layout.px)
        small, large = (sum(weights[r0:, j, None] * en_face[b][taps[r0:, j]] for j in range(4))
                        for en_face, taps, weights in textures)
        thickness = layout.choroid_mm[b][None, :].astype(np.float32)
        frac = np.clip(depth / thickness, 0.0, 1.0)
        texture = small + frac * (large - small)
        lumen = np.clip(texture - 0.05, 0.0, 1.0)
        below = depth - thickness
        choroid = chor_bright * (1.0 - 0.5 * frac) * (
            1.0 - 0.65 * lumen * np.clip(depth * np.float32(1 / 0.03), 0.0, 1.0))
        sclera = 0.08 * np.exp(np.clip(below, 0.0, None) * np.float32(-1 / 0.2)) + 0.03 * texture
        deep = np.clip(below * np.float32(1 / 0.15) + 0.5, 0.0, 1.0)
        base[r0:] = np.where(label[r0:] >= _CHOROID, choroid + deep * (sclera - choroid), base[r0:])

        cyst = np.zeros((height, width), bool)
        for les, top, bottom in layout.cysts:
            box = _box(top[b], bottom[b], height)
            if box is not None:
                rs, cs, inside = box
                base[rs, cs][inside] = les.level
                cyst[rs, cs] |= inside
        base[1:-1] = 0.25 * base[:-2] + 0.5 * base[1:-1] + 0.25 * base[2:]  # Axial resolution softens edges.

        for top, bottom, wall in blobs[b]:
            box = _box(top, bottom, height)
            if box is not None:
                rs, cs, inside = box
                base[rs, cs] += inside * wall[cs]
        base -= shadow[b][None, :] * (rows >= shadow_row[b][None, :])
        base += _speckle(rng, height, width) * np.float32(speckle) + vignette + rolloff + np.float32(gain[b])
        np.clip(base, 0.0, 1.0, out=base)
        out[b] = np.rint(base * np.float32(np.iinfo(dtype).max))

        ref[b][cyst] = IRF
        ref[b][label == _SRF] = SRF
        ref[b][label == _PED] = PED
    return out, ref


def _vessel_maps(layout: _Layout):
    """Shadow strength and first shadowed row per (B-scan, column), and each B-scan's bright vessel walls."""
    b, w = layout.bscans, layout.width
    shadow = np.zeros((b, w), np.float32)
    shadow_row = np.full((b, w), np.inf, np.float32)
    blobs = [[] for _ in range(b)]
    col_mm = _SCAN_MM / w
    inner_top = layout.tops[_ILM - 1]
    inner = layout.tops[_IPL - 1] - inner_top
    faz = 1.0 - np.exp(-((layout.r / 0.55) ** 4))  # No vessels in the foveal avascular zone.
    for v in layout.vessels:
        inside = (layout.z >= v.za) & (layout.z <= v.zb)
        centre = v.centre(layout.z)
        half = 0.5 * v.width * np.sqrt(1.0 + (v.slope + 2 * v.curve * (layout.z - v.za)) ** 2)
        across = (layout.xx - centre[:, None]) / half[:, None]
        core = np.clip(1.0 - across ** 2, 0.0, None)
        strength = (v.shadow * np.sqrt(core) * faz * inside[:, None]).astype(np.float32)
        radius = 0.5 * v.width * layout.px * np.sqrt(core)
        mid = np.maximum(inner_top + 0.2 * inner + v.depth * 0.5 * inner, inner_top + radius)
        stronger = strength > shadow
        shadow = np.where(stronger, strength, shadow)
        shadow_row = np.where(stronger, mid + 0.5 * radius, shadow_row)
        for i in np.flatnonzero(inside):
            on = np.flatnonzero((core[i] > 0) & (faz[i] > 0.5))
            if on.size == 0 or half[i] < 0.5 * col_mm:
                continue
            wall = np.zeros(w, np.float32)
            wall[on] = 0.16 * faz[i, on]
            blobs[i].append((mid[i] - radius[i], mid[i] + 0.5 * radius[i], wall))
    return shadow, shadow_row, blobs


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
        ValueError: bad vendor, count or shape.
        FileExistsError: the vendor folder already holds files.
    """
    if vendor not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {', '.join(VENDORS)}")
    spec = VENDORS[vendor]
    if volumes < 1:
        raise ValueError(f"volumes must be at least 1, got {volumes}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    shape = (spec.bscans if bscans is None else bscans, spec.height if height is None else height,
             spec.width if width is None else width)
    _check_size(*shape)
    if not 0.0 <= fluid_fraction <= 1.0:
        raise ValueError(f"fluid_fraction must be in [0, 1], got {fluid_fraction}")
    output_dir = pathlib.Path(output_dir)
    final = output_dir / spec.folder
    if outputs.is_occupied(final):
        raise FileExistsError(f"{final} already exists and is not empty")

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
