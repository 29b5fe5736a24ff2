"""Exports a trained octtl model as a TensorFlow SavedModel that takes raw uint8 B-scans.

  python -m octtl.export --model=runs/baseline/squeezenet/batch16/fold0/best.keras --output=export/octtl/1

Signature serving_default: input `bscans`, uint8 (batch, rows, columns) of any size; output `p_fluid`,
float32 (batch,). The model's crop and scaling (from its run's result.json) are part of the graph, so
TF Serving or `tf.saved_model.load` needs TensorFlow alone, not octtl.
"""

import sys

from absl import app
from absl import flags

_MODEL = flags.DEFINE_string("model", None, "best.keras of an octtl run (its result.json beside it).")
_OUTPUT = flags.DEFINE_string("output", None, "SavedModel folder to create (absent or empty).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing export.")

REQUIRED = ("model", "output")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    missing = [f"--{name}" for name in REQUIRED if flags.FLAGS[name].value in (None, "")]
    if missing:
        sys.exit(f"export: error: {', '.join(missing)} required")
    from octtl import exporting, prediction
    from octtl.errors import InputError

    try:
        exporting.check_output(_OUTPUT.value, _OVERWRITE.value)
    except InputError as e:
        sys.exit(f"export: error: {e}")
    from octtl import console

    console.start_tensorflow()
    try:
        metadata = exporting.export(_MODEL.value, _OUTPUT.value, overwrite=_OVERWRITE.value)
    except prediction.ModelError as e:
        sys.exit(f"export: error: --model: {e}")
    except InputError as e:
        sys.exit(f"export: error: {e}")
    print(f"export: {metadata['arch']} ({metadata['image_size']} px, crop {metadata['crop']}, preprocess "
          f"{metadata['preprocess']}) -> {_OUTPUT.value}: serving_default takes uint8 bscans (batch, rows, "
          "columns), returns p_fluid", flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
