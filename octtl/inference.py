"""Applies a trained octtl model to new OCT data: fluid probabilities, per-volume summaries, Grad-CAM, export.

The run's saved config: a model file is an octtl model when `result.json` (written by octtl.train into the run
folder, next to `best.keras`) lies beside it with `status` ok and the `arch`, `image_size`, `preprocess` and
`crop` the model was trained with. Those four decide the preprocessing here, so predictions use exactly the
training pipeline's crop and rescaling (`octtl.data.crop`, `octtl.data.rescale`), whatever flags a user
passes. The reference codes that count as fluid come from the training data's `manifest.json` when
`result.json`'s `data_dir` still holds it, else RETOUCH's default (codes 1-3, one voxel).

Inputs (`read_input`), detected from the path:
  * `volume`: one `.mhd` file; an `oct.mhd` with `reference.mhd` beside it is labelled;
  * `volumes`: a folder searched for `oct.mhd` files (RETOUCH layout), each reference optional;
  * `records`: a folder of TFRecord shards written by tools/to_tfrecord.py (always labelled);
  * `images`: one image file or a folder searched for them; each image is a one-B-scan volume named by its
    path under the folder without suffix, unlabelled (convert class folders to records for labels).
A B-scan is predicted fluid when p_fluid > threshold, the rule octtl.train's accuracy uses.
"""

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import tempfile
from typing import Iterator, Optional, Sequence

import keras
import numpy as np
import SimpleITK as sitk
import tensorflow as tf

from octtl import data, gradcam, models, records, training, volumes

PREDICTION_COLUMNS = ("volume_id", "slice", "p_fluid", "prediction")
LABEL_COLUMN = "label"
SUMMARY_COLUMNS = ("volume_id", "n_bscans", "n_fluid_predicted", "max_p_fluid", "fluid_slices")
# peak_*: the B-scan box of the heatmap's maximum cell (bottom/right exclusive); chance_hit: the probability
# that a random heatmap's maximum lands on fluid in that B-scan (see octtl.gradcam).
GRADCAM_COLUMNS = ("volume_id", "slice", "p_fluid", "label", "peak_top", "peak_bottom", "peak_left", "peak_right",
                   "peak_in_fluid", "chance_hit", "png")
GRADCAM_TABLE = "gradcam.csv"
EXPORT_METADATA = "octtl_export.json"
SERVING_INPUT = "bscans"
SERVING_OUTPUT = "p_fluid"
INPUT_KINDS = ("volume", "volumes", "records", "images")
_RUN_KEYS = ("arch", "image_size", "preprocess", "crop")


class ModelError(Exception):
    """A model file that is not a usable octtl model; the message names the file."""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a model was trained with that inference must repeat."""

    arch: str
    image_size: int
    preprocess: str
    crop: str
    fluid_codes: tuple = (1, 2, 3)
    min_fluid_voxels: int = 1

    @property
    def rescale(self) -> str:
        """octtl.data.rescale's mode for this model, as octtl.training chose it."""
        return "paper" if self.preprocess == "paper" else "none"


@dataclasses.dataclass(frozen=True)
class Scans:
    """The B-scans of one volume (or one image) to predict on."""

    volume_id: str
    source: str  # Named in error messages.
    images: np.ndarray  # uint8, (B-scan, row, column)
    slices: np.ndarray  # int64
    labels: Optional[np.ndarray] = None  # int64 0/1, with a reference
    masks: Optional[np.ndarray] = None  # bool fluid voxels, with a reference volume


def read_run_config(model_path) -> RunConfig:
    """The config of the run that wrote `model_path`, from the result.json beside it."""
    model_path = pathlib.Path(model_path)
    path = model_path.parent / training.RESULT
    if not path.is_file():
        raise ModelError(f"{model_path}: not an octtl model: no {training.RESULT} beside it "
                         "(octtl.train writes one into each run folder, next to best.keras)")
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from None
    if not isinstance(result, dict):
        raise ModelError(f"{path}: not an octtl result (expected a JSON object)")
    missing = [key for key in _RUN_KEYS if key not in result]
    if missing:
        raise ModelError(f"{path}: not an octtl result: no {', '.join(missing)}")
    if result.get("status", "ok") != "ok":
        raise ModelError(f"{path}: the run failed ({result.get('error', 'no error recorded')}); it has no model")
    if result["preprocess"] not in models.PREPROCESS or result["crop"] not in data.CROPS:
        raise ModelError(f"{path}: unknown preprocess {result['preprocess']!r} or crop {result['crop']!r}")
    codes, min_voxels = (1, 2, 3), 1
    manifest = pathlib.Path(str(result.get("data_dir", ""))) / records.MANIFEST
    if result.get("data_dir") and manifest.is_file():
        try:
            facts = json.loads(manifest.read_text())
            codes = tuple(int(c) for c in facts.get("fluid_labels", codes))
            min_voxels = int(facts.get("min_fluid_voxels", min_voxels))
        except (OSError, ValueError, TypeError):
            pass  # The training data's label rule is a refinement; the default is RETOUCH's.
    return RunConfig(arch=str(result["arch"]), image_size=int(result["image_size"]),
                     preprocess=result["preprocess"], crop=result["crop"], fluid_codes=codes,
                     min_fluid_voxels=min_voxels)


def load_model(model_path):
    """Loads an octtl model and its run config, checking that the two agree.

    Returns:
      (keras.Model, RunConfig).

    Raises:
      ModelError: a missing file, a file Keras cannot load, no result.json, or a model of another shape.
    """
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file")
    config = read_run_config(model_path)
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError or zip errors depending on what the file is.
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{model_path}: not an octtl model: Keras cannot load it ({reason})") from None
    size = config.image_size
    want_in, want_out = (None, size, size, 1), (None, 2)
    if not isinstance(model, keras.Model) or model.input_shape != want_in or model.output_shape != want_out:
        raise ModelError(
            f"{model_path}: not an octtl model for its {training.RESULT}: expected input {want_in} and output "
            f"{want_out}, got {getattr(model, 'input_shape', None)} and {getattr(model, 'output_shape', None)}")
    return model, config


def _image_files(folder: pathlib.Path) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in volumes.IMAGE_SUFFIXES)


def input_kind(path) -> str:
    """Which of INPUT_KINDS `path` is; InputError naming it when it is none of them."""
    path = pathlib.Path(path)
    expected = (f"expected a .mhd volume, a folder of volumes (oct.mhd), a TFRecord folder "
                f"({records.SHARD_PATTERN}) or image files ({', '.join(volumes.IMAGE_SUFFIXES)})")
    if not path.exists():
        raise volumes.InputError(f"{path}: does not exist")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".mhd":
            return "volume"
        if suffix in volumes.IMAGE_SUFFIXES:
            return "images"
        raise volumes.InputError(f"{path}: not an input predict can read; {expected}")
    if records.shard_paths(path):
        return "records"
    if volumes.find_volumes(path):
        return "volumes"
    if _image_files(path):
        return "images"
    raise volumes.InputError(f"{path}: holds nothing predict can read; {expected}")


def read_input(path, fluid_codes: Sequence[int] = (1, 2, 3), min_fluid_voxels: int = 1) -> Iterator[Scans]:
    """The B-scans under `path`, one Scans per volume or image, read lazily in a stable order.

    The kind is checked at once (InputError before anything is read); a bad volume raises when reached.
    """
    path = pathlib.Path(path)
    kind = input_kind(path)
    codes = tuple(fluid_codes)
    if kind == "volume":
        return iter([_read_mhd_input(path, codes, min_fluid_voxels)])
    if kind == "volumes":
        folders = volumes.find_volumes(path)
        ids = _unique_ids(folders, path)
        return (_read_volume(folder, vid, codes, min_fluid_voxels) for folder, vid in zip(folders, ids))
    if kind == "records":
        return _read_records(path)
    files = [path] if path.is_file() else _image_files(path)
    ids = [p.stem for p in files] if path.is_file() else [p.relative_to(path).with_suffix("").as_posix()
                                                          for p in files]
    return (_read_image(p, vid) for p, vid in zip(files, ids))


def _unique_ids(folders, root) -> list:
    """Folder names as volume ids, or paths under `root` when names repeat (e.g. two vendors' TRAIN001)."""
    names = [folder.name for folder in folders]
    if len(set(names)) == len(names):
        return names
    return [folder.relative_to(root).as_posix() if folder != root else folder.name for folder in folders]


def _read_mhd_input(path, codes, min_voxels) -> Scans:
    path = pathlib.Path(path)
    if path.name == "oct.mhd":
        return _read_volume(path.parent, path.parent.name, codes, min_voxels)
    return _read_unlabelled(path, path.stem)


def _read_volume(folder, volume_id, codes, min_voxels) -> Scans:
    """A RETOUCH volume folder: labels and fluid masks when reference.mhd is there."""
    folder = pathlib.Path(folder)
    reference_path = folder / "reference.mhd"
    if not reference_path.is_file():
        return _read_unlabelled(folder / "oct.mhd", volume_id)
    bscans = volumes.read_volume(folder, codes=codes, min_voxels=min_voxels)
    # read_volume has validated the reference; its voxels are read again for the masks it does not return.
    reference = sitk.GetArrayFromImage(volumes.read_image(reference_path))
    return Scans(volume_id=volume_id, source=str(folder / "oct.mhd"), images=bscans.images,
                 slices=bscans.slices, labels=bscans.labels, masks=np.isin(reference, codes))


def _read_unlabelled(path, volume_id) -> Scans:
    image = volumes.read_image(path)
    try:
        pixels = volumes.to_uint8(sitk.GetArrayFromImage(image))
    except volumes.InputError as e:
        raise volumes.InputError(f"{path}: {e}") from None
    return Scans(volume_id=volume_id, source=str(path), images=pixels,
                 slices=np.arange(len(pixels), dtype=np.int64))


def _read_image(path, volume_id) -> Scans:
    bscans = volumes.read_image_file(path, 0)
    return Scans(volume_id=volume_id, source=str(path), images=bscans.images, slices=bscans.slices)


def _read_records(records_dir) -> Iterator[Scans]:
    """Consecutive examples of one volume (and one B-scan size) as one Scans; label != 0 is fluid."""
    features = {key: records.FEATURES[key] for key in (records.IMAGE, records.LABEL, records.VOLUME_ID,
                                                       records.SLICE)}
    ds = tf.data.TFRecordDataset(records.shard_paths(records_dir)).map(
        lambda s: records.parse(s, features))
    group = []

    def flush():
        images = np.stack([g[0] for g in group])
        return Scans(volume_id=group[0][1], source=f"{records_dir} (volume {group[0][1]})", images=images,
                     slices=np.array([g[2] for g in group], np.int64),
                     labels=np.array([g[3] for g in group], np.int64))

    try:
        for example in ds.as_numpy_iterator():
            image = records.decode_image(example[records.IMAGE]).numpy()[..., 0]
            item = (image, example[records.VOLUME_ID].decode(), int(example[records.SLICE]),
                    int(example[records.LABEL] != 0))
            if group and (item[1] != group[0][1] or image.shape != group[0][0].shape):
                yield flush()
                group = []
            group.append(item)
    except tf.errors.OpError as e:
        raise volumes.InputError(f"{records_dir}: unreadable TFRecords ({e.message.splitlines()[0]})") from None
    if group:
        yield flush()


def check_shape(scans: Scans, config: RunConfig):
    """Fails on B-scans the model's crop cannot take without showing it padding it never saw."""
    rows, cols = scans.images.shape[1:]
    size = config.image_size
    if config.crop == "center" and (rows < size or cols < size):
        raise volumes.InputError(
            f"{scans.source}: B-scans of {rows}x{cols} pixels are smaller than the {size}x{size} centre crop "
            f"this {config.arch} model was trained with (crop=center in its {training.RESULT})")


class Predictor:
    """Fluid probabilities of uint8 B-scans through a model's own training preprocessing."""

    def __init__(self, model: keras.Model, config: RunConfig, batch_size: int = 32):
        self.model, self.config, self.batch_size = model, config, batch_size
        self._forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    def inputs(self, images: np.ndarray) -> np.ndarray:
        """What the model sees: each B-scan cropped (octtl.data.crop) and rescaled (octtl.data.rescale)."""
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = tf.constant(images[start:start + self.batch_size, :, :, None])
            cropped = data.crop(batch, self.config.image_size, self.config.crop)
            # 0..255 or [-1, 1]; float32 either way, which is what Keras feeds the model in training.
            out.append(tf.cast(data.rescale(cropped, self.config.rescale), tf.float32).numpy())
        return np.concatenate(out) if out else np.zeros((0, self.config.image_size, self.config.image_size, 1))

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """p_fluid (float64) of model inputs as `inputs` makes them."""
        out = [self._forward(tf.constant(inputs[start:start + self.batch_size])).numpy()[:, 1]
               for start in range(0, len(inputs), self.batch_size)]
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)


def format_slices(slices) -> str:
    """Slice numbers as space-separated runs, e.g. [3, 4, 5, 9] -> '3-5 9'."""
    runs = []
    for s in sorted(int(s) for s in slices):
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return " ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def parse_slices(text: str) -> list:
    """The inverse of format_slices."""
    out = []
    for part in text.split():
        first, _, last = part.partition("-")
        out.extend(range(int(first), int(last or first) + 1))
    return out


def metrics(labels, p_fluid, threshold: float) -> dict:
    """Accuracy at the threshold, the majority-class rate it should beat, and ROC AUC (None with one class)."""
    from sklearn import metrics as sk_metrics

    labels, p_fluid = np.asarray(labels), np.asarray(p_fluid)
    fluid = float(np.mean(labels == 1))
    both = 0 < fluid < 1
    return {"n": int(len(labels)), "accuracy": float(np.mean((p_fluid > threshold) == (labels == 1))),
            "majority_rate": max(fluid, 1.0 - fluid),
            "auc": float(sk_metrics.roc_auc_score(labels, p_fluid)) if both else None}


@dataclasses.dataclass
class Report:
    """What one prediction run produced; `lines` renders it for the console."""

    kind: str
    threshold: float
    rows: list
    summaries: list
    metrics: Optional[dict]
    output: pathlib.Path
    summary_path: pathlib.Path
    gradcam_dir: Optional[pathlib.Path] = None
    gradcam_layer: Optional[str] = None
    heatmaps_written: int = 0
    pointing_game: Optional[float] = None
    pointing_chance: Optional[float] = None
    pointing_n: int = 0

    def lines(self) -> list:
        n_fluid = sum(r["prediction"] for r in self.rows)
        out = [f"{len(self.rows)} B-scans of {len(self.summaries)} volumes ({self.kind}); {n_fluid} predicted "
               f"fluid (p_fluid > {self.threshold:g})"]
        width = max([len("volume_id")] + [len(s["volume_id"]) for s in self.summaries])
        out.append(f"{'volume_id':<{width}}  n_bscans  n_fluid_predicted  max_p_fluid  fluid_slices")
        for s in self.summaries:
            out.append(f"{s['volume_id']:<{width}}  {s['n_bscans']:>8}  {s['n_fluid_predicted']:>17}  "
                       f"{s['max_p_fluid']:>11.4f}  {s['fluid_slices']}")
        if self.metrics:
            auc = "n/a (one class)" if self.metrics["auc"] is None else f"{self.metrics['auc']:.4f}"
            out.append(f"accuracy {self.metrics['accuracy']:.4f} (majority class {self.metrics['majority_rate']:.4f})"
                       f", AUC {auc}, on {self.metrics['n']} labelled B-scans")
        if self.gradcam_dir is not None:
            out.append(f"Grad-CAM ({self.gradcam_layer}): {self.heatmaps_written} heatmaps in {self.gradcam_dir}")
            if self.pointing_game is not None:
                out.append(f"pointing game {self.pointing_game:.4f} on {self.pointing_n} fluid B-scans with a "
                           f"reference (random heatmap {self.pointing_chance:.4f})")
        out.append(f"wrote {self.output} and {self.summary_path}")
        return out


def summary_path(output) -> pathlib.Path:
    """Where the per-volume summary of `output` goes: beside it, `<stem>_volumes.csv`."""
    output = pathlib.Path(output)
    return output.with_name(f"{output.stem}_volumes.csv")


def _rows(scans: Scans, p_fluid: np.ndarray, predicted: np.ndarray) -> list:
    """predictions.csv rows of one volume; p_fluid in full (repr) so the CSV reproduces the metrics exactly."""
    rows = []
    for k, p in enumerate(p_fluid):
        row = {"volume_id": scans.volume_id, "slice": int(scans.slices[k]), "p_fluid": repr(float(p)),
               "prediction": int(predicted[k])}
        if scans.labels is not None:
            row[LABEL_COLUMN] = int(scans.labels[k])
        rows.append(row)
    return rows


def volume_summary(volume_id: str, slices, p_fluid, predicted) -> dict:
    """One volume's SUMMARY_COLUMNS: B-scans, how many are predicted fluid, the top p_fluid and which slices."""
    return {"volume_id": volume_id, "n_bscans": len(p_fluid), "n_fluid_predicted": int(np.sum(predicted)),
            "max_p_fluid": float(np.max(p_fluid)), "fluid_slices": format_slices(np.asarray(slices)[predicted])}


def _staging_dir(target: pathlib.Path) -> pathlib.Path:
    """An empty temporary sibling of `target`, with the permissions a plain mkdir would give."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700 would make the renamed folder private.
    return staging


def _png_name(volume_id: str, slice_index: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in volume_id)
    return f"{safe}_{slice_index:03d}.png"


def _write_csv(path: pathlib.Path, columns, rows):
    """Writes to a temporary name; the caller renames it into place when everything has succeeded."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _check_outputs(output: pathlib.Path, gradcam_dir: Optional[pathlib.Path]):
    for path in (output, summary_path(output)):
        if path.is_dir():
            raise volumes.InputError(f"{path}: is a directory; expected a CSV file name")
    if gradcam_dir is not None and gradcam_dir.exists() and (not gradcam_dir.is_dir() or any(gradcam_dir.iterdir())):
        raise volumes.InputError(f"{gradcam_dir}: Grad-CAM folder exists and is not empty")


def run(model_path, input_path, output, gradcam_dir=None, threshold: float = 0.5, batch_size: int = 32) -> Report:
    """Predicts fluid on every B-scan under `input_path` and writes the CSVs (and Grad-CAM PNGs).

    Nothing appears at `output`, its summary or `gradcam_dir` unless the whole input succeeds: CSVs are
    written to temporary names and PNGs to a temporary sibling folder, all renamed at the end.

    Args:
      model_path: an octtl run's best.keras (result.json beside it).
      input_path: one of INPUT_KINDS (see the module docstring).
      output: predictions CSV; the per-volume summary goes to `summary_path(output)`.
      gradcam_dir: absent or empty folder for Grad-CAM PNGs of the B-scans predicted fluid, and gradcam.csv.
      threshold: p_fluid above it is predicted fluid.
      batch_size: B-scans per forward pass.

    Raises:
      ModelError: the model file. volumes.InputError: the input or the output paths.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    output = pathlib.Path(output)
    gradcam_dir = pathlib.Path(gradcam_dir) if gradcam_dir else None
    _check_outputs(output, gradcam_dir)
    kind = input_kind(input_path)
    model, config = load_model(model_path)
    predictor = Predictor(model, config, batch_size)
    cam = gradcam.GradCam(model) if gradcam_dir is not None else None

    staging = None
    if gradcam_dir is not None:
        staging = _staging_dir(gradcam_dir)
    temporary = [output.with_name(f".{output.name}.partial"),
                 output.with_name(f".{summary_path(output).name}.partial")]
    try:
        rows, summaries, cam_rows, hits, chances = [], [], [], [], []
        seen = set()
        for scans in read_input(input_path, config.fluid_codes, config.min_fluid_voxels):
            if scans.volume_id in seen:
                raise volumes.InputError(f"{scans.source}: volume id {scans.volume_id} appears twice in the input")
            seen.add(scans.volume_id)
            if len(scans.images) == 0:
                raise volumes.InputError(f"{scans.source}: no B-scans")
            check_shape(scans, config)
            inputs = predictor.inputs(scans.images)
            p_fluid = predictor(inputs)
            predicted = p_fluid > threshold
            rows.extend(_rows(scans, p_fluid, predicted))
            summaries.append(volume_summary(scans.volume_id, scans.slices, p_fluid, predicted))
            if cam is not None:
                _explain(cam, config, scans, inputs, p_fluid, predicted, staging, batch_size, cam_rows, hits, chances)

        labelled = [r for r in rows if LABEL_COLUMN in r]
        report = Report(
            kind=kind, threshold=threshold, rows=rows, summaries=summaries,
            metrics=metrics([r[LABEL_COLUMN] for r in labelled], [float(r["p_fluid"]) for r in labelled],
                            threshold) if labelled else None,
            output=output, summary_path=summary_path(output))
        columns = PREDICTION_COLUMNS + ((LABEL_COLUMN,) if labelled else ())
        output.parent.mkdir(parents=True, exist_ok=True)
        _write_csv(temporary[0], columns, rows)
        _write_csv(temporary[1], SUMMARY_COLUMNS,
                   [{**s, "max_p_fluid": repr(s["max_p_fluid"])} for s in summaries])
        if cam is not None:
            _write_csv(staging / GRADCAM_TABLE, GRADCAM_COLUMNS, cam_rows)
            report.gradcam_dir, report.gradcam_layer = gradcam_dir, cam.layer.name
            report.heatmaps_written = sum(1 for r in cam_rows if r["png"])
            if hits:
                report.pointing_game = float(np.mean(hits))
                report.pointing_chance = float(np.mean(chances))
                report.pointing_n = len(hits)
            if gradcam_dir.exists():
                gradcam_dir.rmdir()  # Checked empty above; rename cannot replace a folder.
            os.rename(staging, gradcam_dir)
            staging = None
        os.replace(temporary[1], report.summary_path)
        os.replace(temporary[0], output)
        return report
    finally:
        for path in temporary:
            path.unlink(missing_ok=True)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _explain(cam, config, scans, inputs, p_fluid, predicted, staging, batch_size, cam_rows, hits, chances):
    """Grad-CAM of one volume: PNGs of predicted-fluid B-scans; pointing game on reference-fluid ones.

    The pointing game takes every B-scan the reference calls fluid, predicted fluid or not, so the score
    describes the heatmaps rather than the threshold.
    """
    from PIL import Image

    # Reference-fluid B-scans are scored only where a mask says where the fluid is (not in records).
    scored = scans.labels == 1 if scans.masks is not None else np.zeros(len(p_fluid), bool)
    chosen = np.nonzero(predicted | scored)[0]
    size = config.image_size
    for start in range(0, len(chosen), batch_size):
        batch = chosen[start:start + batch_size]
        heatmaps = cam(inputs[batch])
        for k, heatmap in zip(batch, heatmaps):
            shape = scans.images[k].shape
            cell = gradcam.peak_cell(heatmap)
            box = gradcam.cell_box(cell, heatmap.shape, size, shape, config.crop)
            mask = scans.masks[k] if scans.masks is not None else None
            row = {"volume_id": scans.volume_id, "slice": int(scans.slices[k]), "p_fluid": repr(float(p_fluid[k])),
                   "label": "" if scans.labels is None else int(scans.labels[k]),
                   **dict(zip(("peak_top", "peak_bottom", "peak_left", "peak_right"), box or ("",) * 4)),
                   "peak_in_fluid": "", "chance_hit": "", "png": ""}
            if scored[k]:
                cells = gradcam.cell_hits(mask, heatmap.shape, size, config.crop)
                row["peak_in_fluid"] = int(cells[cell])
                row["chance_hit"] = repr(float(cells.mean()))
                hits.append(bool(cells[cell]))
                chances.append(float(cells.mean()))
            if predicted[k]:
                row["png"] = _png_name(scans.volume_id, int(scans.slices[k]))
                smooth = gradcam.to_bscan(gradcam.upsample(heatmap[None], size)[0], shape, config.crop)
                picture = gradcam.overlay(scans.images[k], smooth, box, mask)
                Image.fromarray(picture).save(staging / row["png"], compress_level=1)
            cam_rows.append(row)


def export(model_path, output_dir) -> dict:
    """Writes a SavedModel whose serving signature maps uint8 B-scans of any size to p_fluid.

    The crop and rescaling of the model's training run are traced into the graph, so `tf.saved_model.load`
    or TF Serving can use it with TensorFlow alone, without octtl. Signature `serving_default`: input
    `bscans`, uint8 (batch, rows, columns), one size per call; output `p_fluid`, float32 (batch,). With a
    centre crop, B-scans smaller than the crop fail (as predict refuses them). `octtl_export.json` beside
    `saved_model.pb` records the run config. For TF Serving, pass a version folder (`.../octtl/1`).

    Returns:
      The metadata written to octtl_export.json.
    """
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise volumes.InputError(f"{output_dir}: exists and is not empty")
    model, config = load_model(model_path)
    size = config.image_size

    def serve(bscans):
        if config.crop == "center":
            shape = tf.shape(bscans)
            tf.debugging.assert_greater_equal(
                tf.minimum(shape[1], shape[2]), size,
                message=f"B-scans must be at least {size}x{size} pixels for the centre crop of this model")
        cropped = data.crop(bscans[..., None], size, config.crop)
        inputs = tf.cast(data.rescale(cropped, config.rescale), tf.float32)
        return {SERVING_OUTPUT: tf.cast(model(inputs, training=False)[:, 1], tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    # The first endpoint is also saved as serving_default, the signature TF Serving calls.
    archive.add_endpoint("serve", serve,
                         input_signature=[tf.TensorSpec([None, None, None], tf.uint8, name=SERVING_INPUT)])
    metadata = {**dataclasses.asdict(config), "fluid_codes": list(config.fluid_codes), "model": str(model_path),
                "signature": "serving_default",
                "input": f"{SERVING_INPUT}: uint8 (batch, rows, columns)",
                "output": f"{SERVING_OUTPUT}: float32 (batch,), the softmax probability of fluid"}
    staging = _staging_dir(output_dir)
    try:
        archive.write_out(str(staging / "saved_model"), verbose=False)
        (staging / "saved_model" / EXPORT_METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        if output_dir.exists():
            output_dir.rmdir()
        os.rename(staging / "saved_model", output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return metadata
