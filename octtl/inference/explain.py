"""Grad-CAM over predict's volumes: a PNG over each B-scan predicted fluid, gradcam.csv, the pointing game.

octtl.inference.gradcam computes the heatmaps and maps them back onto the B-scan; this module is what predict's
--gradcam_dir does with them.
"""

import dataclasses
import pathlib
from typing import Optional

import numpy as np

from octtl import outputs

# peak_*: the B-scan box of the heatmap's maximum cell (bottom/right exclusive); chance_hit: the probability
# that a random heatmap's maximum lands on fluid in that B-scan (see octtl.inference.gradcam).
GRADCAM_COLUMNS = ("volume_id", "slice", "p_fluid", "label", "peak_top", "peak_bottom", "peak_left", "peak_right",
                   "peak_in_fluid", "chance_hit", "png")
GRADCAM_TABLE = "gradcam.csv"


@dataclasses.dataclass(frozen=True)
class Explained:
    """What Grad-CAM produced over a whole input."""

    folder: pathlib.Path
    layer: str
    heatmaps: int
    pointing_game: Optional[float]
    pointing_chance: Optional[float]
    pointing_n: int


class Explainer:
    """Grad-CAM over the volumes of one input: PNGs of predicted-fluid B-scans, pointing game on reference fluid.

    The pointing game takes every B-scan the reference calls fluid, predicted fluid or not, so the score
    describes the heatmaps rather than the threshold.
    """

    def __init__(self, model, config, batch_size: int):
        from octtl.inference import gradcam

        self.cam, self.config, self.batch_size = gradcam.GradCam(model), config, batch_size
        self.rows, self.hits, self.chances = [], [], []

    def explain(self, scans, inputs, p_fluid, predicted, folder: pathlib.Path):
        """Heatmaps of one volume's predicted-fluid B-scans (PNGs) and the pointing game on its reference fluid."""
        from PIL import Image

        from octtl.inference import gradcam

        folder.mkdir(exist_ok=True)
        # Reference-fluid B-scans are scored only where a mask says where the fluid is (not in records).
        scored = scans.labels == 1 if scans.masks is not None else np.zeros(len(p_fluid), bool)
        chosen = np.nonzero(predicted | scored)[0]
        size, crop = self.config.image_size, self.config.crop
        for start in range(0, len(chosen), self.batch_size):
            batch = chosen[start:start + self.batch_size]
            for k, heatmap in zip(batch, self.cam(inputs[batch])):
                shape = scans.images[k].shape
                cell = gradcam.peak_cell(heatmap)
                box = gradcam.cell_box(cell, heatmap.shape, size, shape, crop)
                mask = scans.masks[k] if scans.masks is not None else None
                row = {"volume_id": scans.volume_id, "slice": int(scans.slices[k]),
                       "p_fluid": repr(float(p_fluid[k])), "label": "" if scans.labels is None else int(scans.labels[k]),
                       **dict(zip(("peak_top", "peak_bottom", "peak_left", "peak_right"), box or ("",) * 4)),
                       "peak_in_fluid": "", "chance_hit": "", "png": ""}
                if scored[k]:
                    cells = gradcam.cell_hits(mask, heatmap.shape, size, crop)
                    row["peak_in_fluid"] = int(cells[cell])
                    row["chance_hit"] = repr(float(cells.mean()))
                    self.hits.append(bool(cells[cell]))
                    self.chances.append(float(cells.mean()))
                if predicted[k]:
                    row["png"] = _png_name(scans.volume_id, int(scans.slices[k]))
                    smooth = gradcam.to_bscan(gradcam.upsample(heatmap[None], size)[0], shape, crop)
                    picture = gradcam.overlay(scans.images[k], smooth, box, mask, gradcam.crop_box(shape, size, crop))
                    Image.fromarray(picture).save(folder / row["png"], compress_level=1)
                self.rows.append(row)

    def finish(self, folder: pathlib.Path, final: pathlib.Path) -> Explained:
        """Writes gradcam.csv into the staging `folder`; says what the folder will hold once it is `final`."""
        folder.mkdir(exist_ok=True)
        outputs.write_csv(folder / GRADCAM_TABLE, GRADCAM_COLUMNS, self.rows)
        return Explained(folder=final, layer=self.cam.layer.name, heatmaps=sum(1 for r in self.rows if r["png"]),
                         pointing_game=float(np.mean(self.hits)) if self.hits else None,
                         pointing_chance=float(np.mean(self.chances)) if self.hits else None,
                         pointing_n=len(self.hits))


def _png_name(volume_id: str, slice_index: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in volume_id)
    return f"{safe}_{slice_index:03d}.png"

