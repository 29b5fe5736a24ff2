"""Exports a trained octtl model as a TensorFlow SavedModel that takes raw uint8 B-scans.

  python -m octtl.export --model=runs/baseline/squeezenet/batch16/fold0/best.keras --output=export/octtl/1

Signature serving_default: input `bscans`, uint8 (batch, rows, columns) of any size; output `p_fluid`,
float32 (batch,); with --calibrated, after the temperature the run fitted on its validation predictions. The
model's crop and scaling (from its run's result.json) are part of the graph, so TF Serving or
`tf.saved_model.load` needs TensorFlow alone, not octtl. --output (required) must be absent or empty unless
--overwrite.
"""

from absl import flags

from octtl import cli, console
from octtl.errors import ModelError

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("model")
flags.declare_key_flag("output")
flags.declare_key_flag("overwrite")
flags.declare_key_flag("calibrated")



def main(argv):
    """The export command: checks --output, then writes the SavedModel of --model there."""
    cli.no_arguments(argv)
    cli.require("model", "output")
    from octtl.inference import external, savedmodel

    savedmodel.check_output(cli.OUTPUT.value, cli.OVERWRITE.value)  # before TensorFlow's seconds
    temperature = (external.temperature(external.run_result(cli.MODEL.value), cli.MODEL.value)
                   if cli.CALIBRATED.value else None)
    console.start_tensorflow_backend("export (a TensorFlow SavedModel)")
    metadata = savedmodel.export(cli.MODEL.value, cli.OUTPUT.value, overwrite=cli.OVERWRITE.value,
                                 temperature=temperature)
    print(f"export: {metadata['arch']} ({metadata['image_size']} px, crop {metadata['crop']}, preprocess "
          f"{metadata['preprocess']}) -> {cli.OUTPUT.value}: serving_default takes uint8 bscans (batch, rows, "
          f"columns), returns {metadata['output']}"
          + (f", temperature-scaled (T = {temperature:.4g})" if temperature else ""), flush=True)


run = cli.command(main, context={ModelError: "--model"})

if __name__ == "__main__":
    run()
