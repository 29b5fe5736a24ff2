"""A trained model on an external labelled set in one command: its run's thresholds and temperature, and intervals.

What predict adds for a clinical reader (issue #24):
  * `--threshold` is a number (fluid when p_fluid > it, the paper's rule) or a threshold the model's run recorded
    on its validation predictions (octtl.training.clinical): `target_sensitivity` or `youden` (fluid when
    p_fluid >= it, the rule it was chosen under), or `0.5`;
  * `--calibrated` applies the temperature the run fitted on its validation predictions, softmax(log p / T)
    (the default is the model as trained);
  * labelled input (records, reference volumes, or an image folder with a subfolder per class of the model) gets
    the two-by-two table at the threshold with its prevalence, sensitivity, specificity, PPV, NPV, accuracy, AUC,
    Brier score and ECE, each rate with a 95% interval from a bootstrap over volumes: B-scans of one volume (or
    patient: records converted with --group_regex, or class folders read with it) are not independent, so whole
    volumes are resampled. They are printed and written to `<output stem>_metrics.csv`.
"""

import dataclasses
import math
import pathlib
from typing import List, Optional

import numpy as np

from octtl import outputs, runs
from octtl.errors import InputError, ModelError
from octtl.training import calibration, clinical, metrics

DRAWS = 1000  # bootstrap draws of each interval (seed 0: a rerun gives the same interval)
METRIC_COLUMNS = ("metric", "value", "ci_low", "ci_high")
# The recorded thresholds --threshold names (the third, 0.5, is a number: the paper's rule, as recorded).
NAMED = tuple(name for name in clinical.THRESHOLDS if name != "0.5")
# The figures with an interval, in the order printed and written.
WITH_INTERVAL = ("accuracy", "auc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece")


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The threshold predict applies: its value, the run's name for it (None for a number) and its rule."""

    value: float
    name: Optional[str] = None
    inclusive: bool = False  # p_fluid >= value is fluid (a recorded threshold); else p_fluid > value
    recorded: Optional[float] = None  # with --calibrated, the recorded value before the temperature

    def words(self) -> str:
        """'p_fluid >= 0.312 (the run's target_sensitivity threshold, chosen on its validation predictions)'."""
        rule = f"p_fluid {'>=' if self.inclusive else '>'} {self.value:.4g}"
        if not self.name:
            return rule
        scaled = "" if self.recorded is None else f" {self.recorded:.4g}, temperature-scaled like the scores"
        return rule + f" (the run's {self.name} threshold{scaled}, chosen on its validation predictions)"


def run_result(model_path) -> dict:
    """The result.json of the run beside `model_path`; ModelError when there is none (predict refuses it too)."""
    path = pathlib.Path(model_path).parent / runs.RESULT
    result = runs.read_result(path)
    if result is None:
        raise ModelError(f"{model_path}: not an octtl model: no readable {runs.RESULT} beside it")
    return result


def resolve_threshold(text: str, result: dict, model_path) -> Threshold:
    """--threshold as a number in [0, 1] (0.5 is the run's fixed threshold too, by the same rule), or the name of a
    threshold the run chose on its validation predictions (NAMED)."""
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is not None:
        if not 0.0 <= value <= 1.0:
            raise InputError(f"--threshold={text}: must be in [0, 1], or one of {', '.join(NAMED)}")
        return Threshold(value)
    if text not in NAMED:
        raise InputError(f"--threshold={text}: a number in [0, 1], or a threshold the model's run recorded: "
                         f"{', '.join(NAMED)}")
    recorded = result.get("thresholds")
    if not isinstance(recorded, dict) or text not in recorded:
        raise InputError(f"--threshold={text}: {pathlib.Path(model_path).parent / runs.RESULT} records no thresholds "
                         "(the run predates them); give a number, or train the model again")
    if recorded[text] is None:
        raise InputError(f"--threshold={text}: the run's validation set could not define it (one class only); "
                         "give a number or another threshold")
    rule = result.get("threshold_rules", clinical.RULES).get(text, clinical.RULES[text])
    return Threshold(float(recorded[text]), text, rule == ">=")


def temperature(result: dict, model_path) -> float:
    """The temperature the run fitted on its validation predictions; InputError for a run without one."""
    value = result.get("temperature")
    if not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"--calibrated: {pathlib.Path(model_path).parent / runs.RESULT} records no temperature (a "
                         "two-class run fits one since temperature scaling exists); leave --calibrated out")
    return float(value)


def metrics_path(output) -> pathlib.Path:
    """Where the metrics of `output` go when its input is labelled: beside it, `<stem>_metrics.csv`."""
    output = pathlib.Path(output)
    return output.with_name(f"{output.stem}_metrics.csv")


def check_outputs(output, gradcam_dir=None, overwrite: bool = False):
    """predict's outputs, the metrics file included, refused before anything is computed when taken."""
    from octtl.inference import predictor

    predictor.check_outputs(output, gradcam_dir, overwrite)
    outputs.check_target(metrics_path(output), "--output (its metrics)", overwrite)


def scores(volumes, labels, p_fluid, threshold: Threshold, draws: int = DRAWS) -> dict:
    """The two-by-two table at `threshold` and WITH_INTERVAL, each with a bootstrap interval over volumes.

    Returns:
        {"n", "volumes", "tp", "fp", "tn", "fn", "prevalence", "bins", "draws", and for each of WITH_INTERVAL
         {"value", "low", "high"} (None where undefined)}.
    """
    p_fluid, labels = metrics.check_binary(p_fluid, labels)
    volumes = np.asarray(volumes, dtype=object)
    # p > t is p >= the next double above t: two_by_two's rule then gives the paper's.
    cut = threshold.value if threshold.inclusive else float(np.nextafter(threshold.value, math.inf))
    bins = clinical.CALIBRATION_BINS

    statistics = {
        "auc": lambda y, p: metrics.auc(p, y),
        "brier": lambda y, p: calibration.brier(p, y),
        "ece": lambda y, p: calibration.ece(p, y, bins),
        **{rate: (lambda y, p, rate=rate: metrics.two_by_two(p, y, cut)[rate])
           for rate in ("accuracy", "sensitivity", "specificity", "ppv", "npv")},
    }
    table = metrics.two_by_two(p_fluid, labels, cut)
    out = {"n": table["n"], "volumes": len(set(volumes.tolist())), "prevalence": table["prevalence"],
           "bins": bins, "draws": draws, **{c: table[c] for c in ("tp", "fp", "tn", "fn")}}
    for name in WITH_INTERVAL:
        interval = metrics.bootstrap_interval(statistics[name], volumes, labels, p_fluid, draws=draws, seed=0)
        out[name] = {"value": statistics[name](labels, p_fluid), "low": interval.low, "high": interval.high}
    return out


def _figure(entry: dict) -> str:
    if entry["value"] is None:
        return "n/a"
    return f"{entry['value']:.4f}" + ("" if entry["low"] is None else f" [{entry['low']:.4f}, {entry['high']:.4f}]")


def lines(report, figures: Optional[dict], threshold: Threshold, calibrated: bool) -> List[str]:
    """predict's console report (octtl.inference.predictor.Report.lines) with the intervals and operating point."""
    out = report.lines()
    if figures is None:
        return out
    unit = "volume" if report.kind != "images" else "group"
    at = [f"at {threshold.words()}: TP {figures['tp']}, FP {figures['fp']}, TN {figures['tn']}, FN {figures['fn']} "
          f"of {figures['n']} B-scans (prevalence {figures['prevalence']:.4f}); "
          + ", ".join(f"{name} {_figure(figures[name])}" for name in ("sensitivity", "specificity", "ppv", "npv")),
          f"accuracy {_figure(figures['accuracy'])}, AUC {_figure(figures['auc'])}, Brier {_figure(figures['brier'])}"
          f", ECE ({figures['bins']} equal-mass bins) {_figure(figures['ece'])}"
          + (" after the run's temperature (--calibrated)" if calibrated else ""),
          f"95% intervals: {figures['draws']} bootstrap draws of the {figures['volumes']} {unit}s"
          + ("" if report.kind != "images" else " (each image its own unless --group_regex names its patient)")
          + f"; wrote {metrics_path(report.output)}"]
    return out[:-1] + at + out[-1:]


def write_metrics(path, figures: dict):
    """`<stem>_metrics.csv`: one line per figure, its value and 95% interval (counts without one)."""
    rows = [[name, figures[name], "", ""] for name in ("n", "volumes", "prevalence", "tp", "fp", "tn", "fn",
                                                       "bins", "draws")]
    rows += [[name, *("" if figures[name][k] is None else repr(float(figures[name][k]))
                      for k in ("value", "low", "high"))] for name in WITH_INTERVAL]
    outputs.write_csv(path, METRIC_COLUMNS, rows)


def settings(model_path, threshold: str = "0.5", calibrated: bool = False, input_path=None,
             group_regex: Optional[str] = None):
    """(Threshold, temperature or None) of --threshold and --calibrated for `model_path`, and --group_regex checked
    against `input_path`: refused in one line before TensorFlow starts."""
    from octtl.inference import inputs, predictor

    result = run_result(model_path)
    chosen = resolve_threshold(threshold, result, model_path)
    scale = temperature(result, model_path) if calibrated else None
    if scale is not None and chosen.name:
        # Chosen on the scores as trained: the same B-scans are fluid after the (monotone) temperature when the
        # threshold is scaled alike. A number stays a number on the calibrated scale (0.5 maps to itself).
        value = float(calibration.apply_temperature(np.array([chosen.value]), scale)[0])
        chosen = dataclasses.replace(chosen, value=value, recorded=chosen.value)
    if group_regex:
        classes = predictor.read_run_config(model_path).classes
        if input_path is None or not inputs.class_folders(input_path, classes):
            raise InputError(f"--group_regex: applies to class folders (a folder per class of the model: "
                             f"{', '.join(classes)}), which {input_path} is not")
    return chosen, scale


def predict(model_path, input_path, output, gradcam_dir=None, threshold: str = "0.5", calibrated: bool = False,
            group_regex: Optional[str] = None, batch_size: int = 32, overwrite: bool = False):
    """octtl.inference.predictor.predict with the run's threshold or temperature, and intervals where labelled.

    Returns:
        (the predictor's Report, `scores` or None without labels, the Threshold applied).
    """
    from octtl.inference import inputs, predictor

    chosen, scale = settings(model_path, threshold, calibrated, input_path, group_regex)
    classes = predictor.read_run_config(model_path).classes
    check_outputs(output, gradcam_dir, overwrite)
    report = predictor.predict(model_path, input_path, output, gradcam_dir, chosen.value, batch_size, overwrite,
                               chosen.inclusive, scale, group_regex)
    if inputs.class_folders(input_path, classes):
        others = sorted(p.name for p in pathlib.Path(input_path).iterdir() if p.is_dir() and p.name not in classes)
        note = f"labelled by the class folders {', '.join(classes)}" + (
            f"; left out (not the model's classes): {', '.join(others)}" if others else "")
        report = dataclasses.replace(report, input_notes=report.input_notes + (note,))
    labelled = [r for r in report.rows if predictor.LABEL_COLUMN in r]
    if not labelled or "p_fluid" not in labelled[0]:  # the two-by-two table and its intervals: two classes
        return report, None, chosen
    figures = scores([r["volume_id"] for r in labelled], [r[predictor.LABEL_COLUMN] for r in labelled],
                     [float(r["p_fluid"]) for r in labelled], chosen)
    write_metrics(metrics_path(output), figures)
    return report, figures, chosen
