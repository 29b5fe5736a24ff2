"""Exports a trained octtl model as a TensorFlow SavedModel that takes raw uint8 B-scans.

  python -m octtl.export --model=runs/baseline/squeezenet/batch16/fold0/best.keras --output=export/octtl/1

Signature serving_default: input `bscans`, uint8 (batch, rows, columns) of any size; output `p_fluid`,
float32 (batch,). The model's crop and scaling (from its run's result.json) are part of the graph, so
TF Serving or `tf.saved_model.load` needs TensorFlow alone, not octtl. --output (required) must be absent or
empty unless --overwrite.
"""

import sys

from absl import app
from absl import flags

from octtl import cli

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("model")
flags.declare_key_flag("output")
flags.declare_key_flag("overwrite")



def main(argv):
    """The export command: checks --output, then writes the SavedModel of --model there."""
    cli.no_arguments(argv)
    cli.require("export", "model", "output")
    from octtl.inference import savedmodel
    from octtl.inference import predictor
    from octtl.errors import InputError

    try:
        savedmodel.check_output(cli.OUTPUT.value, cli.OVERWRITE.value)
    except InputError as e:
        sys.exit(f"export: error: {e}")
    from octtl import console

    console.start_tensorflow()
    try:
        metadata = savedmodel.export(cli.MODEL.value, cli.OUTPUT.value, overwrite=cli.OVERWRITE.value)
    except predictor.ModelError as e:
        sys.exit(f"export: error: --model: {e}")
    except InputError as e:
        sys.exit(f"export: error: {e}")
    print(f"export: {metadata['arch']} ({metadata['image_size']} px, crop {metadata['crop']}, preprocess "
          f"{metadata['preprocess']}) -> {cli.OUTPUT.value}: serving_default takes uint8 bscans (batch, rows, "
          "columns), returns p_fluid", flush=True)


def run():
    """Console-script entry point: parses the flags and runs main."""
    app.run(main)


if __name__ == "__main__":
    run()
