"""Predicts macular fluid on new OCT data with a trained octtl model, optionally with Grad-CAM overlays.

  python -m octtl.predict --model=runs/demo/baseline/squeezenet/batch16/fold0/best.keras \
      --input=data/synthetic --output=predictions.csv [--gradcam_dir=gradcam] [--threshold=0.5]

--input is one .mhd volume, a folder of volumes (RETOUCH layout, reference optional), a TFRecord folder or
image files; the crop and rescaling are the model's own, read from the result.json of its run. Writes
predictions.csv (volume_id,slice,p_fluid,prediction[,label]) and the per-volume summary
<output stem>_volumes.csv beside it, and prints the summary, accuracy/AUC when labels exist and, with
--gradcam_dir and reference masks, the Grad-CAM pointing game.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "best.keras of an octtl run (its result.json beside it).")
_INPUT = flags.DEFINE_string("input", None, "A .mhd volume, a folder of volumes, a TFRecord folder or image files.")
_OUTPUT = flags.DEFINE_string("output", "predictions.csv", "Predictions CSV; the per-volume summary goes beside it.")
_GRADCAM_DIR = flags.DEFINE_string("gradcam_dir", None,
                                   "Absent or empty folder for Grad-CAM PNGs of the B-scans predicted fluid.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "A B-scan is predicted fluid when p_fluid > threshold.",
                                lower_bound=0.0, upper_bound=1.0)

flags.mark_flags_as_required(["model", "input"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from octtl import inference
    from octtl.volumes import InputError

    try:
        report = inference.run(_MODEL.value, _INPUT.value, _OUTPUT.value, gradcam_dir=_GRADCAM_DIR.value,
                               threshold=_THRESHOLD.value)
    except inference.ModelError as e:
        sys.exit(f"predict: error: --model: {e}")
    except InputError as e:
        sys.exit(f"predict: error: {e}")
    print("\n".join(report.lines()), flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
