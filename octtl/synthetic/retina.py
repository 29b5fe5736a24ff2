"""The anatomy of a synthetic OCT volume: layers, fluid pockets and vessels laid out in millimetres.

A `Layout` draws one volume's retina: a layered retina with a foveal pit and the bowl of the posterior pole,
the three RETOUCH fluid kinds as 3-D pockets (IRF cysts inside the retina, SRF domes between photoreceptors and
RPE, PED domes under the lifted RPE) and the retinal vessels whose shadows fall on neighbouring B-scans. Anatomy
is laid out over a nominal 6 x 6 mm scan with about 2 mm of depth, whatever the pixel grid, so small test
volumes keep the same look. octtl.synthetic.render renders B-scans from it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from octtl.data.volumes import FLUID_CODES

IRF, SRF, PED = FLUID_CODES["irf"], FLUID_CODES["srf"], FLUID_CODES["ped"]  # The lesion kinds.

SCAN_MM = 6.0  # Lateral extent and extent across B-scans of every vendor's macular cube.
DEPTH_MM = 2.0  # Nominal axial field of view: anatomy is scaled to the row count, not to the header spacing.

# Layer labels, top to bottom. Each boundary map in Layout.tops starts the label of the same index. SUBRETINAL and
# SUB_RPE are the spaces SRF and PED fill: no rows thick where the retina is dry.
(VITREOUS, ILM, RNFL, GCL, IPL, INL, OPL, ONL, ELM, MZ, EZ, OS, IZ, SUBRETINAL, RPE, SUB_RPE, BM, CHOROID,
 SCLERA) = range(19)
# Mean display brightness (0..1, log-compressed) of each layer; fluid, choroid and sclera are set per volume.
# The vitreous sits below black so that only the brightest noise-floor speckle shows.
LEVELS = np.array([-0.08, 0.62, 0.74, 0.40, 0.55, 0.30, 0.54, 0.25, 0.46, 0.25, 0.80, 0.37, 0.62, 0.0, 0.90, 0.0,
                   0.72, 0.0, 0.0], np.float32)
# Mean and spread of log(speckle) for the 3 x 2 smoothed exponential field drawn in speckle.
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
        """The pocket's axial size in mm at each (x, z), zero outside it."""
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
        """The vessel's lateral position in mm where it crosses each B-scan position z."""
        return self.xa + self.slope * (z - self.za) + self.curve * (z - self.za) ** 2


@dataclasses.dataclass
class _FluidMaps:
    """What the lesions add over the (B-scan, column) grid, in rows."""

    srf: np.ndarray  # Height of the subretinal fluid.
    ped: np.ndarray  # Height of the detached RPE's dome.
    cysts: list  # The IRF lesions, shallowest seat first.
    cyst_maps: list  # Each cyst's height.
    gaps: list  # The part of each cyst's height that displaces the layers around it.
    all_gaps: np.ndarray  # The gaps summed.
    swell: np.ndarray  # How much the nuclear layers thicken: the gaps, or the edema around them where larger.


class Layout:
    """Per-volume anatomy: layer boundary rows and lesion maps over the (B-scan, column) grid.

    Every draw comes from `rng` in one fixed order (fovea, layer thicknesses, lesions, vessels, Bruch's membrane,
    choroid), so a generator in a given state always lays out the same retina.
    """

    def __init__(self, rng: np.random.Generator, bscans: int, height: int, width: int, wet: float):
        self.bscans, self.height, self.width = bscans, height, width
        self.px = height / DEPTH_MM  # Rows per mm.
        self._grid()
        self._fovea(rng)
        thick = self._thicknesses(rng)
        wet_bscans = self._wet_interval(rng, wet)
        self.lesions = self._plan_lesions(rng, wet_bscans)
        self.vessels = self._plan_vessels(rng)
        maps = self._fluid_maps()
        bm = self._bruchs_membrane(rng)
        self._boundaries(rng, thick, maps, bm)

    def _grid(self) -> None:
        """Column and B-scan centres in mm, and the (B-scan, column) en-face grid they span."""
        self.x = (np.arange(self.width) + 0.5) / self.width * SCAN_MM
        self.z = (np.arange(self.bscans) + 0.5) / self.bscans * SCAN_MM
        self.xx, self.zz = np.meshgrid(self.x, self.z)  # (B, W) en-face grid in mm.

    def _fovea(self, rng: np.random.Generator) -> None:
        """The foveal centre (xf, zf) in mm and each grid point's distance r from it."""
        # Fixation is never perfect: the fovea and the bowl of the eye sit a little off centre.
        self.xf = SCAN_MM / 2 + float(np.clip(rng.normal(0.0, 0.18), -0.45, 0.45))
        self.zf = SCAN_MM / 2 + float(np.clip(rng.normal(0.0, 0.1), -0.25, 0.25))
        self.r = np.hypot(self.xx - self.xf, self.zz - self.zf)

    def _thicknesses(self, rng: np.random.Generator) -> dict:
        """Rows over the grid of each layer that fluid does not make: thinned in the foveal pit, thick on its rim."""
        r, xx, zz = self.r, self.xx, self.zz
        pit_radius = rng.uniform(0.35, 0.5)
        pit = 1.0 - np.exp(-((r / pit_radius) ** 2))  # Inner layers vanish in the foveal pit.
        rim = 1.0 + 0.3 * np.exp(-(((r - 1.1) / 0.6) ** 2))  # Ganglion cells pile up on the parafoveal rim.
        nasal = rng.choice([-1.0, 1.0]) * (xx - self.xf)
        scale = rng.uniform(0.9, 1.1)
        mm = {
            ILM: np.full_like(r, 0.006),
            RNFL: pit * (0.012 + 0.03 / (1.0 + np.exp(-(nasal - 1.2) / 0.5))
                         + 0.014 * np.clip((np.abs(zz - self.zf) / 2.5) ** 2, 0, 1)),
            GCL: pit * rim * 0.042 * (1.0 - 0.25 * np.clip((r - 1.5) / 2.0, 0, 1)),
            IPL: pit * (1.0 + 0.5 * (rim - 1.0)) * 0.034,
            INL: pit * 0.033,
            OPL: (0.3 + 0.7 * pit) * 0.024,
            ONL: 0.062 + 0.04 * np.exp(-((r / 0.45) ** 2)),
            ELM: np.full_like(r, 0.005),
            MZ: np.full_like(r, 0.014),
            EZ: np.full_like(r, 0.012),
            OS: 0.02 + 0.012 * np.exp(-((r / 0.4) ** 2)),
            IZ: np.full_like(r, 0.008),
            RPE: np.full_like(r, 0.018),
            BM: np.full_like(r, 0.007),
        }
        return {k: v * scale * self.px for k, v in mm.items()}

    def _fluid_maps(self) -> _FluidMaps:
        """The lesions' heights over the grid, scaled down together where they would push the retina out."""
        xx, zz, r = self.xx, self.zz, self.r
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
        all_gaps = sum(gaps, np.zeros_like(r))
        swell = np.maximum(edema, all_gaps)
        # Keep the retina inside the image: real scans of severe edema are re-centred by the operator.
        cap = 0.45 * self.px
        excess = float((srf + ped + swell).max())
        if excess > cap:
            shrink = cap / excess
            srf, ped, all_gaps, swell = srf * shrink, ped * shrink, all_gaps * shrink, swell * shrink
            cyst_maps = [m * shrink for m in cyst_maps]
            gaps = [m * shrink for m in gaps]
        return _FluidMaps(srf, ped, cysts, cyst_maps, gaps, all_gaps, swell)

    def _bruchs_membrane(self, rng: np.random.Generator) -> np.ndarray:
        """The row of Bruch's membrane, the top of the choroid, over the grid."""
        xx, zz = self.xx, self.zz
        # The bowl of the posterior pole: edges higher than the centre, tilted by the scan angle.
        xc = self.xf + rng.normal(0.0, 0.5)
        zc = self.zf + rng.normal(0.0, 0.5)
        bowl = rng.uniform(0.15, 0.4) * (((xx - xc) / SCAN_MM) ** 2 + ((zz - zc) / SCAN_MM) ** 2)
        tilt = rng.uniform(-0.06, 0.06) * (xx / SCAN_MM - 0.5) + rng.uniform(-0.04, 0.04) * (zz / SCAN_MM - 0.5)
        phase = rng.uniform(0, 2 * np.pi, 2)
        wobble = 0.006 * np.sin(2 * np.pi * xx / rng.uniform(2.5, 5.0) + phase[0]) * np.cos(
            2 * np.pi * zz / rng.uniform(3.0, 6.0) + phase[1])
        return self.height * (rng.uniform(0.6, 0.67) - bowl + tilt + wobble)

    def _boundaries(self, rng: np.random.Generator, thick: dict, maps: _FluidMaps, bm: np.ndarray) -> None:
        """Sets tops (the first row of each layer from the ILM down to the sclera), cysts and choroid_mm."""
        tops = self._outer_tops(thick, maps, bm)
        cysts = self._inner_tops(tops, thick, maps)
        # Severe swelling would leave the image: move the whole fundus down as a scan operator would.
        shift = max(0.0, 0.04 * self.height - float(tops[ILM].min()))
        shift = min(shift, max(0.0, 0.85 * self.height - float(bm.max())))
        self.choroid_mm = rng.uniform(0.15, 0.32) + 0.06 * np.exp(-((self.r / 1.5) ** 2))
        tops[SCLERA] = bm + self.choroid_mm * self.px
        self.tops = np.stack([tops[k] + shift for k in range(ILM, SCLERA + 1)])  # (18, B, W)
        self.cysts = [(les, top + shift, bottom + shift) for les, top, bottom in cysts]

    @staticmethod
    def _outer_tops(thick: dict, maps: _FluidMaps, bm: np.ndarray) -> dict:
        """Boundaries from Bruch's membrane up to the ELM: the PED lifts the RPE, SRF lifts the photoreceptors."""
        tops = {CHOROID: bm}
        tops[BM] = bm - thick[BM]
        tops[SUB_RPE] = tops[BM] - maps.ped
        tops[RPE] = tops[SUB_RPE] - thick[RPE]
        tops[SUBRETINAL] = tops[RPE] - maps.srf
        tops[IZ] = tops[SUBRETINAL] - thick[IZ]
        tops[OS] = tops[IZ] - thick[OS]
        tops[EZ] = tops[OS] - thick[EZ]
        tops[MZ] = tops[EZ] - thick[MZ]
        tops[ELM] = tops[MZ] - thick[ELM]
        return tops

    def _inner_tops(self, tops: dict, thick: dict, maps: _FluidMaps) -> list:
        """Adds the boundaries from the ONL up to the ILM to tops; returns (cyst, top row, bottom row) per cyst."""
        # Cysts open gaps in the nuclear layers (ONL, OPL, INL): each boundary above a cyst's seat moves up by the
        # cyst's gap, and the tissue stretches to fill the rest of the swelling.
        host = thick[ONL] + thick[OPL] + thick[INL]
        stretch = (host + maps.swell - maps.all_gaps) / host
        below = np.zeros_like(self.r)
        cysts = []
        for les, h, gap in zip(maps.cysts, maps.cyst_maps, maps.gaps):
            seat = stretch * les.depth * host + below
            # Centred on its gap, so the cyst is an oval reaching into the tissue on both sides.
            low = np.maximum(seat + 0.5 * gap - 0.5 * h, 0.0)
            cysts.append((les, tops[ELM] - (seat + 0.5 * gap + 0.5 * h), tops[ELM] - low))
            below = below + gap

        def pushed(tissue: np.ndarray) -> np.ndarray:
            lift = sum((g * (les.depth * host < tissue) for les, g in zip(maps.cysts, maps.gaps)),
                       np.zeros_like(self.r))
            return tops[ELM] - stretch * tissue - lift

        tops[ONL] = pushed(thick[ONL])
        tops[OPL] = pushed(thick[ONL] + thick[OPL])
        tops[INL] = tops[ELM] - host - maps.swell
        tops[IPL] = tops[INL] - thick[IPL]
        tops[GCL] = tops[IPL] - thick[GCL]
        tops[RNFL] = tops[GCL] - thick[RNFL]
        tops[ILM] = tops[RNFL] - thick[ILM]
        return cysts

    def _wet_interval(self, rng: np.random.Generator, wet: float) -> tuple[int, int]:
        """The run of B-scans [first, last) that will hold fluid, centred near the fovea."""
        count = int(round(wet * self.bscans))
        if wet > 0:
            count = max(count, min(3, self.bscans))
        centre = self.zf / SCAN_MM * self.bscans + rng.normal(0.0, 0.1 * self.bscans)
        first = int(np.clip(round(centre - count / 2), 0, self.bscans - count))
        return first, first + count

    def _plan_lesions(self, rng: np.random.Generator, wet_bscans: tuple[int, int]) -> list[_Lesion]:
        first, last = wet_bscans
        if last <= first:
            return []
        step = SCAN_MM / self.bscans
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
            return float(np.clip(self.xf + rng.normal(0.0, 0.5), 0.6, SCAN_MM - 0.6)), radius
        crop = 0.5 * SCAN_MM * 224 / 512
        side = rng.choice([-1.0, 1.0])
        x0 = SCAN_MM / 2 + side * rng.uniform(crop + 0.3, SCAN_MM / 2 - 0.2)
        return float(x0), float(min(radius, abs(x0 - SCAN_MM / 2) - crop + 0.1))

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
            xc = float(np.clip(x0 + rng.normal(0.0, 0.6), 0.1, SCAN_MM - 0.1))
            cysts.append(_Lesion(IRF, xc, zc, rx, rzc, min(0.15, 2 * rx * rng.uniform(0.25, 0.7)), 0.5,
                                 rng.normal(0.0, 0.1), depth=rng.uniform(0.05, 0.95), level=rng.uniform(-0.02, 0.09)))
        return cysts

    def _plan_vessels(self, rng: np.random.Generator) -> list[_Vessel]:
        vessels = []
        for _ in range(int(rng.integers(5, 11))):
            za = rng.uniform(-1.0, 3.0)
            vessels.append(_Vessel(xa=rng.uniform(0.0, SCAN_MM), za=za, zb=za + rng.uniform(2.5, 8.0),
                                   slope=rng.uniform(-0.5, 0.5), curve=rng.uniform(-0.08, 0.08),
                                   width=rng.uniform(0.035, 0.12), depth=rng.uniform(0.3, 0.7),
                                   shadow=rng.uniform(0.1, 0.22)))
        return vessels



def vessel_maps(layout: Layout):
    """Shadow strength and first shadowed row per (B-scan, column), and each B-scan's bright vessel walls."""
    b, w = layout.bscans, layout.width
    shadow = np.zeros((b, w), np.float32)
    shadow_row = np.full((b, w), np.inf, np.float32)
    blobs = [[] for _ in range(b)]
    col_mm = SCAN_MM / w
    inner_top = layout.tops[ILM - 1]
    inner = layout.tops[IPL - 1] - inner_top
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


def speckle(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Log of fully developed speckle, smoothed over 3 rows x 2 columns like an OCT's resolution cell; unit variance."""
    field = rng.standard_exponential((height + 2, width + 1), dtype=np.float32)
    field = 0.25 * field[:-2] + 0.5 * field[1:-1] + 0.25 * field[2:]
    field = 0.5 * (field[:, :-1] + field[:, 1:])
    np.log(field, out=field)
    field -= _LOG_SPECKLE_MEAN
    field *= 1.0 / _LOG_SPECKLE_STD
    return field
