"""Applies a trained octtl model to new OCT data: fluid probabilities, per-volume summaries and Grad-CAM.

A model file is an octtl model when `result.json` (written by octtl.train into the run folder, next to
`best.keras`) lies beside it with `status` ok and the `arch`, `image_size`, `preprocess` and `crop` the model
was trained with. The crop is repeated here with `octtl.data.images.crop` (training's own, in numpy on every
backend); the scaling is inside the model (its `input_scaling` layer), except in paper-mode models saved before
it moved there, which get `octtl.data.images.rescale`.
The reference codes that count as fluid come from the training data's `manifest.json` when `result.json`'s
`data_dir` still holds it, else RETOUCH's default (codes 1-3, one voxel).

A B-scan is predicted fluid when p_fluid > threshold, the rule octtl.train's accuracy uses. Keras (and its
backend) is imported only by the functions that need it, so a command can check its outputs first.
"""

import dataclasses
import json
import pathlib
from typing import Optional

import numpy as np

from octtl import outputs
from octtl.inference import explain
from octtl.runs import RESULT
from octtl.errors import InputError, ModelError  # noqa: F401  (ModelError: raised here)
from octtl.inference.inputs import Scans, check_records, input_kind, read_input
from octtl.training import calibration

PREDICTION_COLUMNS = ("volume_id", "slice", "p_fluid", "prediction", "source")
LABEL_COLUMN = "label"
SUMMARY_COLUMNS = ("volume_id", "n_bscans", "n_fluid_predicted", "max_p_fluid", "fluid_slices")
_RUN_KEYS = ("arch", "image_size", "preprocess", "crop")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What a model was trained with that inference must repeat."""

    arch: str
    image_size: int
    preprocess: str
    crop: str
    fluid_codes: tuple = (1, 2, 3)
    min_fluid_voxels: int = 1
    label_note: Optional[str] = None  # how the label rule was found, when it had to be guessed
    denoise: str = "none"  # the training run's --denoise, applied to new scans alike
    denoise_strength: Optional[float] = None
    classes: tuple = ("normal", "fluid")  # its training data's classes (result.json; runs before it: these)
    task: str = "fluid"  # octtl.training.tasks: the records' classes, or the three fluid types


def read_run_config(model_path) -> RunConfig:
    """The config of the run that wrote `model_path`, from the result.json beside it."""
    model_path = pathlib.Path(model_path)
    path = model_path.parent / RESULT
    if not path.is_file():
        raise ModelError(f"{model_path}: not an octtl model: no {RESULT} beside it "
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
    if result["preprocess"] not in ("paper", "backbone") or result["crop"] not in ("center", "resize"):
        raise ModelError(f"{path}: unknown preprocess {result['preprocess']!r} or crop {result['crop']!r}")
    codes, min_voxels, note = _label_rule(result)
    classes = result.get("classes") or ["normal", "fluid"]
    if not isinstance(classes, list) or len(classes) < 2:
        raise ModelError(f"{path}: classes {str(classes)[:60]} is not a list of at least two class names")
    return RunConfig(arch=str(result["arch"]), image_size=int(result["image_size"]),
                     preprocess=result["preprocess"], crop=result["crop"], fluid_codes=codes,
                     min_fluid_voxels=min_voxels, label_note=note, denoise=result.get("denoise", "none"),
                     denoise_strength=result.get("denoise_strength"), classes=tuple(str(c) for c in classes),
                     task=str(result.get("task", "fluid")))


def _label_rule(result: dict):
    """(fluid codes, minimum voxels, note) that labelled the model's training data, for labelling new volumes.

    result.json records them; runs from before it did take them from the training data's manifest, and where
    that has moved, RETOUCH's default (codes 1-3, one voxel) is used and the note says so.
    """
    from octtl.data import records
    from octtl.data import volumes

    if result.get("fluid_labels") is not None:
        return tuple(int(c) for c in result["fluid_labels"]), int(result.get("min_fluid_voxels", 1)), None
    try:
        manifest = records.read_manifest(result.get("data_dir") or "")
        return (tuple(int(c) for c in manifest.get("fluid_labels", volumes.ALL_FLUID)),
                int(manifest.get("min_fluid_voxels", 1)), None)
    except (InputError, ValueError, TypeError):
        return volumes.ALL_FLUID, 1, ("labels of reference volumes use RETOUCH's codes 1-3: the run recorded no rule "
                                      "and its training data's manifest is gone")


def load_model(model_path):
    """Loads an octtl model and its run config, checking that the two agree.

    Returns:
      (keras.Model, RunConfig).

    Raises:
      ModelError: a missing file, a file Keras cannot load, no result.json, or a model of another shape.
    """
    import keras

    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: no such model file")
    config = read_run_config(model_path)
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError or zip errors depending on what the file is.
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"{model_path}: not an octtl model: Keras cannot load it ({reason})") from None
    size = config.image_size
    want_in, want_out = (None, size, size, 1), (None, len(config.classes))
    if not isinstance(model, keras.Model) or model.input_shape != want_in or model.output_shape != want_out:
        raise ModelError(
            f"{model_path}: not an octtl model for its {RESULT}: expected input {want_in} and output "
            f"{want_out}, got {getattr(model, 'input_shape', None)} and {getattr(model, 'output_shape', None)}")
    return model, config


def rescale_mode(model, config: RunConfig) -> str:
    """octtl.data.images.rescale's mode for a model: 'none' when it scales its inputs itself, else the paper's."""
    from octtl.nets import scaling

    return "none" if scaling.has_input_scaling(model) or config.preprocess != "paper" else "paper"


def volumes_of(input_path, config: RunConfig, group_regex=None):
    """The input's volumes (octtl.inference.inputs.read_input), each refused in one line where it repeats an id,
    holds no B-scan or is smaller than the model's centre crop."""
    seen = set()
    for scans in read_input(input_path, config.fluid_codes, config.min_fluid_voxels, config.classes, group_regex):
        if scans.volume_id in seen:
            raise InputError(f"{scans.source}: volume id {scans.volume_id} appears twice in the input")
        seen.add(scans.volume_id)
        if len(scans.images) == 0:
            raise InputError(f"{scans.source}: no B-scans")
        check_shape(scans, config)
        yield scans


def check_shape(scans: Scans, config: RunConfig):
    """Fails on B-scans the model's crop cannot take without showing it padding it never saw."""
    size = config.image_size
    for rows, cols in sorted({image.shape for image in scans.images}):
        if config.crop == "center" and (rows < size or cols < size):
            raise InputError(
                f"{scans.source}: B-scans of {rows}x{cols} pixels are smaller than the {size}x{size} centre crop "
                f"this {config.arch} model was trained with (crop=center in its {RESULT})")


class Predictor:
    """Fluid probabilities of uint8 B-scans through a model's own training preprocessing."""

    def __init__(self, model, config: RunConfig, batch_size: int = 32):
        from octtl.nets import devices

        self.model, self.config, self.batch_size = model, config, batch_size
        self.rescale = rescale_mode(model, config)
        if devices.backend() == "tensorflow":
            import tensorflow as tf

            traced = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
            self._forward, self._padded = lambda x: traced(tf.constant(x)).numpy(), False
        else:
            # Compiled once for one shape: every batch is padded to batch_size.
            self._forward, self._padded = model.predict_on_batch, True

    def inputs(self, images) -> np.ndarray:
        """What the model sees: each B-scan denoised as in training, cropped (octtl.data.images.crop), and rescaled
        where the model does not scale itself."""
        from octtl.data import denoise
        from octtl.data import images as image_ops

        if self.config.denoise != "none":
            images = [denoise.denoise(image, self.config.denoise, self.config.denoise_strength) for image in images]

        size = self.config.image_size
        out = np.zeros((len(images), size, size, 1), np.float32)
        by_shape = {}
        for k, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(k)
        for members in by_shape.values():
            for start in range(0, len(members), self.batch_size):
                chunk = members[start:start + self.batch_size]
                batch = np.stack([images[k] for k in chunk])[..., None].astype(np.uint8)
                cropped = image_ops.crop(batch, size, self.config.crop)
                # 0..255 (or legacy [-1, 1]) as float32, which is what Keras feeds the model in training.
                out[chunk] = image_ops.rescale(cropped, self.rescale)
        return out

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        """p_fluid (float64) of model inputs as `inputs` makes them."""
        return self.probabilities(inputs)[:, 1]

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Every output (float64, (n, outputs)) of model inputs as `inputs` makes them."""
        from octtl.data import pipeline

        inputs = np.asarray(inputs, np.float32)
        if self._padded:
            out = [np.asarray(self._forward(batch))[:count]
                   for batch, count in pipeline.padded_batches(inputs, self.batch_size)]
        else:
            out = [np.asarray(self._forward(inputs[start:start + self.batch_size]))
                   for start in range(0, len(inputs), self.batch_size)]
        return (np.concatenate(out).astype(np.float64) if out
                else np.zeros((0, len(self.config.classes)), np.float64))


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


def metrics(labels, p_fluid, threshold: float, inclusive: bool = False) -> dict:
    """Accuracy at the threshold, the majority-class rate it should beat, and ROC AUC (None with one class)."""
    from sklearn import metrics as sk_metrics

    labels, p_fluid = np.asarray(labels), np.asarray(p_fluid)
    fluid = float(np.mean(labels == 1))
    both = 0 < fluid < 1
    called = p_fluid >= threshold if inclusive else p_fluid > threshold
    return {"n": int(len(labels)), "accuracy": float(np.mean(called == (labels == 1))),
            "majority_rate": max(fluid, 1.0 - fluid),
            "auc": float(sk_metrics.roc_auc_score(labels, p_fluid)) if both else None}


@dataclasses.dataclass(frozen=True)
class Report:
    """What one prediction run produced; `lines` renders it for the console."""

    kind: str
    threshold: float
    rows: list
    summaries: list
    metrics: Optional[dict]
    output: pathlib.Path
    summary_path: pathlib.Path
    explained: Optional[explain.Explained] = None
    note: Optional[str] = None
    input_notes: tuple = ()  # what of the input was not read, and why
    inclusive: bool = False  # p_fluid >= threshold is fluid (a threshold recorded by the run), else > (the paper's)

    def lines(self) -> list:
        """The console report: counts, one line per volume, metrics where labels were known, Grad-CAM, files."""
        n_fluid = sum(r["prediction"] for r in self.rows)
        volumes = len(self.summaries)
        out = [f"{len(self.rows)} B-scan{'s' * (len(self.rows) != 1)} of {volumes} volume{'s' * (volumes != 1)} "
               f"({self.kind}); {n_fluid} predicted fluid (p_fluid {'>=' if self.inclusive else '>'} "
               f"{self.threshold:g})"]
        out += [f"note: {note}" for note in self.input_notes]
        width = max([len("volume_id")] + [len(s["volume_id"]) for s in self.summaries])
        out.append(f"{'volume_id':<{width}}  n_bscans  n_fluid_predicted  max_p_fluid  fluid_slices")
        for s in self.summaries:
            out.append(f"{s['volume_id']:<{width}}  {s['n_bscans']:>8}  {s['n_fluid_predicted']:>17}  "
                       f"{s['max_p_fluid']:>11.4f}  {s['fluid_slices']}")
        if self.metrics:
            auc = "n/a (one class)" if self.metrics["auc"] is None else f"{self.metrics['auc']:.4f}"
            out.append(f"accuracy {self.metrics['accuracy']:.4f} (majority class {self.metrics['majority_rate']:.4f})"
                       f", AUC {auc}, on {self.metrics['n']} labelled B-scans")
            if self.note:
                out.append(f"note: {self.note}")
        if self.explained is not None:
            e = self.explained
            out.append(f"Grad-CAM ({e.layer}): {e.heatmaps} heatmaps in {e.folder}")
            if e.pointing_game is not None:
                out.append(f"pointing game {e.pointing_game:.4f} on {e.pointing_n} fluid B-scans with a "
                           f"reference (random heatmap {e.pointing_chance:.4f})")
        out.append(f"wrote {self.output} and {self.summary_path}")
        return out


def summary_path(output) -> pathlib.Path:
    """Where the per-volume summary of `output` goes: beside it, `<stem>_volumes.csv`."""
    output = pathlib.Path(output)
    return output.with_name(f"{output.stem}_volumes.csv")


def check_outputs(output, gradcam_dir=None, overwrite: bool = False):
    """Refuses taken or impossible output paths before anything is computed (needs no TensorFlow)."""
    outputs.check_target(output, "--output", overwrite)
    outputs.check_target(summary_path(output), "--output (its summary)", overwrite)
    if gradcam_dir is not None:
        outputs.check_target(gradcam_dir, "--gradcam_dir", overwrite, folder=True)


def volume_summary(volume_id: str, slices, p_fluid, predicted) -> dict:
    """One volume's SUMMARY_COLUMNS: B-scans, how many are predicted fluid, the top p_fluid and which slices."""
    return {"volume_id": volume_id, "n_bscans": len(p_fluid), "n_fluid_predicted": int(np.sum(predicted)),
            "max_p_fluid": float(np.max(p_fluid)), "fluid_slices": format_slices(np.asarray(slices)[predicted])}


def _rows(scans: Scans, p_fluid: np.ndarray, predicted: np.ndarray) -> list:
    """predictions.csv rows of one volume; p_fluid in full (repr) so the CSV reproduces the metrics exactly."""
    rows = []
    for k, p in enumerate(p_fluid):
        row = {"volume_id": scans.volume_id, "slice": int(scans.slices[k]), "p_fluid": repr(float(p)),
               "prediction": int(predicted[k]), "source": scans.sources[k]}
        if scans.labels is not None:
            row[LABEL_COLUMN] = int(scans.labels[k])
        rows.append(row)
    return rows


def predict(model_path, input_path, output, gradcam_dir=None, threshold: float = 0.5, batch_size: int = 32,
            overwrite: bool = False, inclusive: bool = False, temperature=None, group_regex=None) -> Report:
    """Predicts fluid on every B-scan under `input_path` and writes the CSVs (and Grad-CAM PNGs).

    Nothing appears at `output`, its summary or `gradcam_dir` unless the whole input succeeds: everything is
    written into a staging folder beside `output` and renamed into place at the end.

    Args:
      model_path: an octtl run's best.keras (result.json beside it).
      input_path: one of scans.INPUT_KINDS.
      output: predictions CSV; the per-volume summary goes to `summary_path(output)`.
      gradcam_dir: absent or empty folder for Grad-CAM PNGs of the B-scans predicted fluid, and gradcam.csv.
      threshold: p_fluid above it is predicted fluid.
      batch_size: B-scans per forward pass.
      overwrite: replace existing outputs.
      inclusive, temperature, group_regex: p_fluid >= threshold is fluid; softmax(log p / temperature) for p;
        class folders' groups (octtl.inference.external, issue #24).

    Raises:
      ModelError: the model file. InputError: the input or the output paths.
    """
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold={threshold}: must be in [0, 1]")
    output = pathlib.Path(output)
    gradcam_dir = pathlib.Path(gradcam_dir) if gradcam_dir else None
    check_outputs(output, gradcam_dir, overwrite)
    kind = input_kind(input_path)
    model, config = load_model(model_path)
    # A fluid-types model learned from the fluid task's records (normal, fluid, with voxel counts per type).
    expected = ("normal", "fluid") if config.task == "fluid_types" else config.classes
    input_notes = check_records(input_path, expected) if kind == "records" else []
    predictor = Predictor(model, config, batch_size)
    if config.task != "fluid" or len(config.classes) > 2:
        if gradcam_dir is not None:
            raise InputError(f"--gradcam_dir: Grad-CAM explains a two-class model's p_fluid; {model_path} gives "
                             f"{', '.join(config.classes)}")
        if config.task == "fluid" and threshold != 0.5:
            raise InputError(f"--threshold={threshold:g}: a model of {len(config.classes)} classes predicts its most "
                             "probable class; a threshold applies to two classes and to fluid types")
        from octtl.inference import classes

        return classes.predict(model, config, predictor, volumes_of(input_path, config, group_regex), output, kind,
                               threshold, overwrite, input_notes, summary_path(output))
    explainer = explain.Explainer(model, config, batch_size) if gradcam_dir is not None else None

    with outputs.staged(output, "--output") as staging:
        rows, summaries = [], []
        for scans in volumes_of(input_path, config, group_regex):
            inputs = predictor.inputs(scans.images)
            p_fluid = predictor(inputs)
            if temperature is not None:  # --calibrated: the run's validation temperature
                p_fluid = calibration.apply_temperature(p_fluid, temperature)
            predicted = p_fluid >= threshold if inclusive else p_fluid > threshold
            rows.extend(_rows(scans, p_fluid, predicted))
            summaries.append(volume_summary(scans.volume_id, scans.slices, p_fluid, predicted))
            if explainer is not None:
                explainer.explain(scans, inputs, p_fluid, predicted, staging / "gradcam")

        labelled = [r for r in rows if LABEL_COLUMN in r]
        scores = metrics([r[LABEL_COLUMN] for r in labelled], [float(r["p_fluid"]) for r in labelled],
                         threshold, inclusive) if labelled else None
        columns = PREDICTION_COLUMNS + ((LABEL_COLUMN,) if labelled else ())
        outputs.write_csv(staging / "predictions.csv", columns, rows)
        outputs.write_csv(staging / "summary.csv", SUMMARY_COLUMNS,
                          [{**s, "max_p_fluid": repr(s["max_p_fluid"])} for s in summaries])
        explained = explainer.finish(staging / "gradcam", gradcam_dir) if explainer is not None else None
        if explainer is not None:
            outputs.publish(staging / "gradcam", gradcam_dir, overwrite)
        outputs.publish(staging / "summary.csv", summary_path(output), overwrite)
        outputs.publish(staging / "predictions.csv", output, overwrite)
        return Report(kind=kind, threshold=threshold, rows=rows, summaries=summaries, metrics=scores,
                      output=output, summary_path=summary_path(output), explained=explained, note=config.label_note,
                      input_notes=tuple(input_notes), inclusive=inclusive)
