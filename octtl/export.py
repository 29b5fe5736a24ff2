"""Exports a trained octtl model as a TensorFlow SavedModel that takes raw uint8 B-scans.

  python -m octtl.export --model=runs/demo/baseline/squeezenet/batch16/fold0/best.keras --output=export/octtl/1

Signature serving_default: input `bscans`, uint8 (batch, rows, columns) of any size; output `p_fluid`,
float32 (batch,). The model's crop and rescaling (from its run's result.json) are part of the graph, so
TF Serving or `tf.saved_model.load` needs TensorFlow alone, not octtl.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

_MODEL = flags.DEFINE_string("model", None, "best.keras of an octtl run (its result.json beside it).")
_OUTPUT = flags.DEFINE_string("output", None, "SavedModel folder to create (absent or empty).")

flags.mark_flags_as_required(["model", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from octtl import inference
    from octtl.volumes import InputError

    try:
        metadata = inference.export(_MODEL.value, _OUTPUT.value)
    except inference.ModelError as e:
        sys.exit(f"export: error: --model: {e}")
    except InputError as e:
        sys.exit(f"export: error: --output: {e}")
    print(f"export: {metadata['arch']} ({metadata['image_size']} px, crop {metadata['crop']}, preprocess "
          f"{metadata['preprocess']}) -> {_OUTPUT.value}: serving_default takes uint8 bscans (batch, rows, "
          "columns), returns p_fluid", flush=True)


def run():
    app.run(main)


if __name__ == "__main__":
    run()
