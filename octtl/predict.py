r"""Predicts macular fluid on new OCT data with a trained octtl model, optionally with Grad-CAM overlays.

  python -m octtl.predict --model=runs/baseline/squeezenet/batch16/fold0/best.keras \
      --input=data/synthetic --output=predictions.csv [--gradcam_dir=gradcam] [--threshold=0.5] [--overwrite]

--output defaults to predictions.csv. --input is one .mhd volume, a folder of volumes (RETOUCH layout, reference optional), a TFRecord folder or
image files; the crop and scaling are the model's own, read from the result.json of its run. Writes
predictions.csv (volume_id,slice,p_fluid,prediction,source[,label]) and the per-volume summary
<output stem>_volumes.csv beside it, and prints the summary, accuracy/AUC when labels exist and, with
--gradcam_dir and reference masks, the Grad-CAM pointing game. Existing outputs are refused without --overwrite.
"""

from absl import flags

from octtl import cli, console
from octtl.errors import InputError, ModelError

_INPUT = flags.DEFINE_string("input", None, "A .mhd volume, a folder of volumes, a TFRecord folder or image files.")
_GRADCAM_DIR = flags.DEFINE_string("gradcam_dir", None,
                                   "Absent or empty folder for Grad-CAM PNGs of the B-scans predicted fluid.")
_THRESHOLD = flags.DEFINE_float("threshold", 0.5, "A B-scan is predicted fluid when p_fluid > threshold.",
                                lower_bound=0.0, upper_bound=1.0)
DEFAULT_OUTPUT = "predictions.csv"  # --output; the per-volume summary goes beside it

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("model")
flags.declare_key_flag("output")
flags.declare_key_flag("overwrite")



def main(argv):
    """The predict command: predicts every B-scan of --input with --model and writes --output."""
    cli.no_arguments(argv)
    cli.require("model", "input")
    output = cli.OUTPUT.value or DEFAULT_OUTPUT
    from octtl.inference import predictor

    predictor.check_outputs(output, _GRADCAM_DIR.value, cli.OVERWRITE.value)  # before the backend's seconds
    if _GRADCAM_DIR.value is not None and console.backend() != "tensorflow":
        raise InputError(f"--gradcam_dir: Grad-CAM takes its gradients with TensorFlow's GradientTape; the "
                         f"{console.backend()} backend cannot run it (predict without --gradcam_dir, or with "
                         "KERAS_BACKEND=tensorflow)")
    console.start_backend()
    report = predictor.predict(cli.MODEL.value, _INPUT.value, output, gradcam_dir=_GRADCAM_DIR.value,
                               threshold=_THRESHOLD.value, overwrite=cli.OVERWRITE.value)
    print("\n".join(report.lines()), flush=True)


run = cli.command(main, context={ModelError: "--model"})

if __name__ == "__main__":
    run()
