r"""Predicts macular fluid on new OCT data with a trained octtl model, optionally with Grad-CAM overlays.

  python -m octtl.predict --model=runs/baseline/squeezenet/batch16/fold0/best.keras \
      --input=data/synthetic --output=predictions.csv [--gradcam_dir=gradcam] [--overwrite]
      [--threshold=0.5|target_sensitivity|youden] [--calibrated] [--group_regex=RE (class folders)]

--output defaults to predictions.csv. --input is one .mhd volume, a folder of volumes (RETOUCH layout, reference optional), a TFRecord folder or
image files; the crop and scaling are the model's own, read from the result.json of its run. Writes
predictions.csv (volume_id,slice,p_fluid,prediction,source[,label]) and the per-volume summary
<output stem>_volumes.csv beside it, and prints the summary, accuracy/AUC when labels exist and, with
--gradcam_dir and reference masks, the Grad-CAM pointing game. Labelled input (records, reference volumes, or
class folders named after the model's classes) also gets the two-by-two table at the threshold, sensitivity,
specificity, PPV, NPV, Brier and ECE with 95% intervals from a bootstrap over volumes (or patients), printed and
written to <output stem>_metrics.csv. Existing outputs are refused without --overwrite.
"""

from absl import flags

from octtl import cli, console
from octtl.errors import InputError, ModelError

_INPUT = flags.DEFINE_string("input", None, "A .mhd volume, a folder of volumes, a TFRecord folder or image files.")
_GRADCAM_DIR = flags.DEFINE_string("gradcam_dir", None,
                                   "Absent or empty folder for Grad-CAM PNGs of the B-scans predicted fluid.")
_THRESHOLD = flags.DEFINE_string(
    "threshold", "0.5", "A number in [0, 1]: a B-scan is predicted fluid when p_fluid > it (the paper's rule); or a "
    "threshold the model's run chose on its validation predictions: target_sensitivity or youden (fluid when "
    "p_fluid >= it).")
DEFAULT_OUTPUT = "predictions.csv"  # --output; the per-volume summary goes beside it

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("model")
flags.declare_key_flag("output")
flags.declare_key_flag("overwrite")
flags.declare_key_flag("calibrated")
flags.declare_key_flag("group_regex")



def main(argv):
    """The predict command: predicts every B-scan of --input with --model and writes --output."""
    cli.no_arguments(argv)
    cli.require("model", "input")
    output = cli.OUTPUT.value or DEFAULT_OUTPUT
    from octtl.inference import external

    external.check_outputs(output, _GRADCAM_DIR.value, cli.OVERWRITE.value)  # before the backend's seconds
    if _GRADCAM_DIR.value is not None and console.backend() != "tensorflow":
        raise InputError(f"--gradcam_dir: Grad-CAM takes its gradients with TensorFlow's GradientTape; the "
                         f"{console.backend()} backend cannot run it (predict without --gradcam_dir, or with "
                         "KERAS_BACKEND=tensorflow)")
    # --threshold, --calibrated and --group_regex too, before the backend's seconds.
    external.settings(cli.MODEL.value, _THRESHOLD.value, cli.CALIBRATED.value, _INPUT.value, cli.GROUP_REGEX.value)
    console.start_backend()
    report, figures, threshold = external.predict(
        cli.MODEL.value, _INPUT.value, output, gradcam_dir=_GRADCAM_DIR.value, threshold=_THRESHOLD.value,
        calibrated=cli.CALIBRATED.value, group_regex=cli.GROUP_REGEX.value, overwrite=cli.OVERWRITE.value)
    print("\n".join(external.lines(report, figures, threshold, cli.CALIBRATED.value)), flush=True)


run = cli.command(main, context={ModelError: "--model"})

if __name__ == "__main__":
    run()
