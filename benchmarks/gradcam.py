r"""Where a trained model's Grad-CAM points on new synthetic volumes, against what chance and a fixed map score.

  python benchmarks/gradcam.py [--model=runs/baseline/squeezenet/batch16/fold0/best.keras | --train_flags=...]
      [--work_dir=DIR] [--volumes=12] [--seed=1] [--layers=fire8_concat,...,head] [--noocclusion]

Without --model it first runs the README's demo into --work_dir (24 synthetic volumes of seed 0, converted,
`octtl.train --flagfile=flags/demo.cfg` plus any --train_flags). It then draws --volumes new Spectralis-shaped
volumes of another seed and, on every B-scan whose reference holds fluid, finds the peak cell of each map below
and plays the pointing game (octtl.inference.gradcam: a hit when the peak cell's B-scan box holds reference fluid):
  * Grad-CAM at predict's block (`target_layer`), exactly as `predict --gradcam_dir` scores it, and at --layers;
  * the class activation map of a head that is a 1x1 convolution and a global average (SqueezeNet's): the
    per-cell fluid log-odds, whose mean is the score itself, so it is the network's own exact decomposition;
  * the same Grad-CAM peak with each cell's box re-centred on its effective receptive field (the centroid of the
    input gradient of that cell's features), a check of the grid-to-B-scan geometry, and with its box widened
    by --tolerance crop pixels (Zhang et al.'s pointing game tolerates 15 px): is the peak beside the fluid?
  * occlusion (--occlusion): the cell whose blurring lowers the fluid log-odds most, no gradients involved;
  * a random peak cell (the mean share of cells on fluid) and a fixed cell: the one most often on fluid in the
    other volumes (leave one volume out), a map that ignores the image.
The 95% interval is a percentile bootstrap over volumes (B-scans of one volume are not independent); the
headline line adds the Wilson interval over B-scans for comparison. Prints a markdown table.
"""

import collections
import pathlib
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_MODEL = flags.DEFINE_string("model", None, "An octtl run's best.keras; default: train the README's demo first.")
_TRAIN_FLAGS = flags.DEFINE_list("train_flags", [], "Flags the demo's training adds to flags/demo.cfg, e.g. "
                                 "--crop=center,--image_size=227 (without --model).")
_WORK_DIR = flags.DEFINE_string("work_dir", None, "Where the demo and the new volumes go; default: a temp dir.")
_VOLUMES = flags.DEFINE_integer("volumes", 12, "New synthetic volumes to score on.")
_SEED = flags.DEFINE_integer("seed", 1, "Their seed (the demo trains on seed 0).")
_LAYERS = flags.DEFINE_list("layers", ["fire8_concat", "fire7_concat", "fire6_concat", "fire5_concat", "head"],
                            "Other blocks to weight; those the model lacks are skipped.")
_OCCLUSION = flags.DEFINE_boolean("occlusion", True, "Also score occlusion maps (a forward pass per cell).")
_TOLERANCE = flags.DEFINE_integer("tolerance", 15, "Crop pixels around the peak cell that also count as a hit in "
                                   "the tolerant row (Zhang et al.'s pointing game allows 15 px).")
_RESAMPLES = flags.DEFINE_integer("resamples", 10000, "Bootstrap resamples over volumes.")


def train_demo(work: pathlib.Path, extra) -> pathlib.Path:
    """The README's demo in `work` (its data made once), trained with `extra` flags added; returns its best.keras."""
    steps = [] if (work / "records").is_dir() else [
        ["tools/make_synthetic.py", f"--output_dir={work / 'synthetic'}"],
        ["tools/to_tfrecord.py", f"--input_dir={work / 'synthetic'}", f"--output_dir={work / 'records'}"]]
    logdir = work / "runs" / ("".join(ch if ch.isalnum() else "_" for ch in "".join(extra)).strip("_") or "demo")
    steps.append(["-m", "octtl.train", "--flagfile=flags/demo.cfg", f"--data_dir={work / 'records'}",
                  f"--logdir={logdir}", *extra])
    for step in steps:
        subprocess.run([sys.executable, *step], cwd=REPO, check=True)
    return next(logdir.rglob("best.keras"))


def bootstrap(hits_by_volume, resamples: int, seed: int = 0):
    """95% percentile interval of the pooled hit rate, volumes drawn with replacement."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sums = np.array([np.sum(h) for h in hits_by_volume], float)
    counts = np.array([len(h) for h in hits_by_volume], float)
    draws = rng.integers(0, len(sums), (resamples, len(sums)))
    rates = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    return tuple(float(v) for v in np.quantile(rates, [0.025, 0.975]))


def wilson(hits: int, n: int, z: float = 1.959964):
    """Wilson score interval of a binomial proportion (B-scans taken as independent)."""
    centre = (hits + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * (hits * (n - hits) / n + z * z / 4) ** 0.5
    return centre - half, centre + half


class Boxes:
    """Whether fluid lies under any block of crop pixels, by the mapping `gradcam.cell_box` uses, per pixel."""

    def __init__(self, mask, size: int, crop: str):
        import numpy as np

        from octtl.inference import gradcam

        rows = [gradcam.cell_box((i, 0), (size, 1), size, mask.shape, crop) for i in range(size)]
        cols = [gradcam.cell_box((0, j), (1, size), size, mask.shape, crop) for j in range(size)]
        # B-scan span under each crop pixel (empty on padding), and an integral image of the mask.
        self.rows = [(b[0], b[1]) if b else (0, 0) for b in rows]
        self.cols = [(b[2], b[3]) if b else (0, 0) for b in cols]
        self.sums = np.pad(np.cumsum(np.cumsum(mask, axis=0), axis=1), ((1, 0), (1, 0)))

    def hits(self, row_edges, col_edges, widen: int = 0):
        """(len(row_edges) - 1, len(col_edges) - 1) bool: fluid under each block of crop pixels, each block
        widened by `widen` crop pixels on every side (clipped to the crop)."""
        import numpy as np

        def spans(edges, under):
            out = []
            for a, b in zip(edges[:-1], edges[1:]):
                a, b = max(a - widen, 0), min(b + widen, len(under))
                inside = [under[p] for p in range(a, b) if under[p][0] < under[p][1]]
                out.append((min(s[0] for s in inside), max(s[1] for s in inside)) if inside else (0, 0))
            return np.array(out)

        r, c = spans(row_edges, self.rows), spans(col_edges, self.cols)
        s = self.sums
        total = (s[np.ix_(r[:, 1], c[:, 1])] - s[np.ix_(r[:, 0], c[:, 1])] - s[np.ix_(r[:, 1], c[:, 0])]
                 + s[np.ix_(r[:, 0], c[:, 0])])
        return total > 0


def receptive_edges(model, layer, inputs, size: int):
    """Crop-pixel cell edges per axis, halfway between the effective receptive-field centres of the cells.

    A cell's centre along an axis is the centroid of |d(sum of its features)/d(input)| over `inputs`, taken on
    the grid's diagonal (the network is the same along both axes up to the image).
    """
    import keras
    import numpy as np
    import tensorflow as tf

    features = keras.Model(model.input, layer.output)
    x = tf.constant(inputs)
    centres = [[], []]
    for q in range(int(layer.output.shape[1])):
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(features(x, training=False)[:, q, q, :])
        g = np.abs(tape.gradient(total, x).numpy()[..., 0]).sum(axis=0)
        for axis in (0, 1):
            profile = g.sum(axis=1 - axis)
            centres[axis].append(float(profile @ np.arange(size) / profile.sum()))
    edges = []
    for c in centres:
        middle = np.floor((np.array(c[:-1]) + np.array(c[1:])) / 2 + 0.5).astype(int)
        edges.append(np.concatenate([[0], middle, [size]]))
    return edges, centres


def occlusion_maps(predictor_, inputs, grid, size: int):
    """(n, rows, cols) drop of the fluid log-odds when a cell's crop pixels are replaced by the blurred crop."""
    import numpy as np
    from scipy import ndimage

    from octtl.inference import gradcam

    rows, cols = gradcam.cell_edges(grid[0], size), gradcam.cell_edges(grid[1], size)
    sigma = size / max(grid)
    out = np.zeros((len(inputs), *grid), np.float32)

    def log_odds(batch):
        p = np.clip(predictor_(batch), 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    for k, image in enumerate(inputs):
        blurred = ndimage.gaussian_filter(image[..., 0], sigma)[..., None]
        occluded = np.repeat(image[None], grid[0] * grid[1], axis=0)
        for i in range(grid[0]):
            for j in range(grid[1]):
                box = np.s_[rows[i]:rows[i + 1], cols[j]:cols[j + 1]]
                occluded[i * grid[1] + j][box] = blurred[box]
        out[k] = (log_odds(image[None])[0] - log_odds(occluded)).reshape(grid)
    return out


def head_map_model(model):
    """A model giving the per-cell logits that the head's global average pools, or None for a dense head."""
    import keras

    from octtl.nets import models

    producer = {id(layer.output): layer for layer in model.layers}
    pool = producer.get(id(model.get_layer(models.HEAD_SOFTMAX).input))
    if not isinstance(pool, keras.layers.GlobalAveragePooling2D):
        return None
    return keras.Model(model.input, pool.input)


def fixed_cells(hits):
    """Per volume, its B-scans' peak: the cell most often on fluid in the other volumes' (rows, cols) hit grids."""
    import numpy as np

    from octtl.inference import gradcam

    out = []
    for k in range(len(hits)):
        prior = sum((h.astype(float) for j, volume in enumerate(hits) if j != k for h in volume),
                    np.zeros(hits[k][0].shape))
        out.append([gradcam.peak_cell(prior)] * len(hits[k]))
    return out


def score(name, grid, peaks, hits, zero, resamples):
    """One table row from per-volume peak cells and (rows, cols) hit grids."""
    import numpy as np

    flat = [p for volume in peaks for p in volume]
    cell, count = collections.Counter(flat).most_common(1)[0]
    spread = sum(cell in volume for volume in peaks)
    border = sum(p[0] in (0, grid[0] - 1) or p[1] in (0, grid[1] - 1) for p in flat)
    by_volume = [[bool(h[p]) for p, h in zip(pv, hv)] for pv, hv in zip(peaks, hits)]
    n, won = len(flat), sum(sum(v) for v in by_volume)
    chance = np.mean([h.mean() for hv in hits for h in hv])
    lo, hi = bootstrap(by_volume, resamples)
    return {"method": name, "grid": f"{grid[0]}x{grid[1]}", "n": n, "hits": won, "pointing": won / n,
            "lo": lo, "hi": hi, "random": chance, "top": f"{cell[0]},{cell[1]}", "top_n": count, "spread": spread,
            "border": border, "zero": zero}


def main(argv):
    del argv
    from octtl import console

    console.start_tensorflow()
    import numpy as np

    from octtl.inference import gradcam, predictor
    from octtl.inference.inputs import read_input
    from octtl.nets import loading
    from octtl.synthetic import render

    work = pathlib.Path(_WORK_DIR.value or tempfile.mkdtemp(prefix="octtl-gradcam-"))
    model_path = pathlib.Path(_MODEL.value) if _MODEL.value else train_demo(work, _TRAIN_FLAGS.value)
    new = work / f"new-seed{_SEED.value}"
    if not any(new.rglob("oct.mhd")):
        render.write_dataset(new, volumes=_VOLUMES.value, seed=_SEED.value)
    model, config = predictor.load_model(model_path)
    predict = predictor.Predictor(model, config)
    size, crop = config.image_size, config.crop

    target = gradcam.GradCam(model)
    edges = [gradcam.cell_edges(n, size) for n in target.grid]
    volumes, dry = [], collections.Counter()  # (inputs, boxes) of each volume's fluid B-scans; peaks without
    for scans in read_input(new, config.fluid_codes, config.min_fluid_voxels):
        fluid = np.nonzero(scans.labels == 1)[0]
        dry.update(gradcam.peak_cell(h) for h in target(predict.inputs(
            [image for image, label in zip(scans.images, scans.labels) if label == 0])))
        boxes = [Boxes(scans.masks[k], size, crop) for k in fluid]
        for k, b in zip(fluid[:1], boxes):  # predict scores with cell_hits: the integral image must agree
            assert (b.hits(*edges) == gradcam.cell_hits(scans.masks[k], target.grid, size, crop)).all()
        volumes.append((predict.inputs([scans.images[k] for k in fluid]), boxes))
    volumes = [v for v in volumes if len(v[1])]
    print(f"{model_path} ({config.arch}, {config.crop} {size} px) on {len(volumes)} new volumes of seed "
          f"{_SEED.value}: {sum(len(b) for _, b in volumes)} B-scans with reference fluid", file=sys.stderr)

    def nominal(grid):
        return [[b.hits(gradcam.cell_edges(grid[0], size), gradcam.cell_edges(grid[1], size)) for b in boxes]
                for _, boxes in volumes]

    rows, maps = [], {}
    names = {loading.layer_name(x.name) for x in model.layers}  # either spelling (octtl.nets.loading)
    for layer in [None] + [name for name in _LAYERS.value if loading.layer_name(name) in names]:
        cam = gradcam.GradCam(model, layer)
        heatmaps = [cam(inputs) for inputs, _ in volumes]
        maps[cam.layer.name] = heatmaps
        label = f"Grad-CAM {cam.layer.name}" + (" (predict's)" if layer is None else "")
        rows.append(score(label, cam.grid, [[gradcam.peak_cell(h) for h in v] for v in heatmaps], nominal(cam.grid),
                          sum(int(not h.any()) for v in heatmaps for h in v), _RESAMPLES.value))
    heatmaps, grid = maps[target.layer.name], target.grid
    peaks = [[gradcam.peak_cell(h) for h in v] for v in heatmaps]
    hits = nominal(grid)
    widened = [[b.hits(*edges, widen=_TOLERANCE.value) for b in boxes] for _, boxes in volumes]

    head = head_map_model(model)
    if head is not None:
        cam_maps = [np.maximum(head.predict(inputs, verbose=0), 0) for inputs, _ in volumes]
        cam_maps = [v[..., 1] - v[..., 0] for v in cam_maps]
        rows.append(score("class activation map of the head (exact log-odds per cell)", cam_maps[0].shape[1:],
                          [[gradcam.peak_cell(h) for h in v] for v in cam_maps], nominal(cam_maps[0].shape[1:]),
                          0, _RESAMPLES.value))
    sample = np.concatenate([inputs for inputs, _ in volumes])[:: max(1, sum(len(b) for _, b in volumes) // 48)]
    (row_edges, col_edges), centres = receptive_edges(model, target.layer, sample, size)
    rows.append(score(f"Grad-CAM {target.layer.name}, cells re-centred on receptive fields", grid, peaks,
                      [[b.hits(row_edges, col_edges) for b in boxes] for _, boxes in volumes], 0, _RESAMPLES.value))
    occluded = [occlusion_maps(predict, inputs, grid, size) for inputs, _ in volumes] if _OCCLUSION.value else []
    if occluded:
        rows.append(score(f"occlusion on the {grid[0]}x{grid[1]} grid (blur one cell)", grid,
                          [[gradcam.peak_cell(h) for h in v] for v in occluded], hits, 0, _RESAMPLES.value))
    several = len(volumes) > 1  # a fixed cell is chosen on the other volumes
    if several:
        rows.append(score("a fixed cell, most often on fluid in the other volumes", grid, fixed_cells(hits), hits,
                          0, _RESAMPLES.value))
    wide = f", widened by {_TOLERANCE.value} crop px"
    rows.append(score(f"Grad-CAM {target.layer.name}{wide}", grid, peaks, widened, 0, _RESAMPLES.value))
    if several:
        rows.append(score(f"a fixed cell{wide}", grid, fixed_cells(widened), widened, 0, _RESAMPLES.value))

    print("| map | grid | pointing game | 95% interval (volumes) | random cell | most frequent peak cell "
          "| peaks on the border | all-zero maps |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['grid']} | {r['pointing']:.3f} ({r['hits']}/{r['n']}) | "
              f"{r['lo']:.3f}-{r['hi']:.3f} | {r['random']:.3f} | ({r['top']}): {r['top_n']}/{r['n']}, "
              f"{r['spread']} volumes | {r['border']}/{r['n']} | {r['zero']} |")
    first = rows[0]
    lo, hi = wilson(first["hits"], first["n"])
    upsampled = sum(
        gradcam.peak_cell(h) == tuple(int(np.searchsorted(gradcam.cell_edges(g, size), p, side="right") - 1)
                                      for g, p in zip(grid, np.unravel_index(np.argmax(u), u.shape)))
        for v in heatmaps for h, u in zip(v, gradcam.upsample(v, size)))
    print(f"\n{first['method']}: Wilson 95% interval over B-scans {lo:.3f}-{hi:.3f}; the peak of the upsampled map "
          f"lies in the peak cell in {upsampled}/{first['n']} B-scans")
    print(f"receptive-field centres (crop px) of its rows {np.round(centres[0]).astype(int).tolist()}, columns "
          f"{np.round(centres[1]).astype(int).tolist()}; cell centres {((edges[0][:-1] + edges[0][1:]) // 2).tolist()}")
    unseen = sum(not h.any() for hv in hits for h in hv)
    print(f"{unseen}/{first['n']} B-scans hold their fluid only outside the crop, where no peak can hit it")
    (cell, count), = dry.most_common(1)
    print(f"B-scans without fluid: Grad-CAM's most frequent peak cell ({cell[0]},{cell[1]}) in "
          f"{count}/{sum(dry.values())}")
    if occluded:
        pairs = [(h, o) for hv, ov in zip(heatmaps, occluded) for h, o in zip(hv, ov)]
        same = sum(gradcam.peak_cell(h) == gradcam.peak_cell(o) for h, o in pairs)
        at_cam = np.median([o[gradcam.peak_cell(h)] for h, o in pairs])
        print(f"occlusion: its peak is Grad-CAM's peak cell in {same}/{len(pairs)} B-scans; blurring Grad-CAM's peak "
              f"cell lowers the fluid log-odds by {at_cam:.2f} (median), blurring occlusion's own peak cell by "
              f"{np.median([o.max() for _, o in pairs]):.2f}")


if __name__ == "__main__":
    app.run(main)
