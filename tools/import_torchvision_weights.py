"""Converts a torchvision ImageNet checkpoint into the Keras weights files that `--weights=imagenet` loads.

  python tools/import_torchvision_weights.py --arch=resnet18 \
      --checkpoint=$HOME/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth

Writes <arch>_imagenet_notop.weights.h5 (all but the last classifier: what fine-tuning needs) and
<arch>_imagenet.weights.h5 into --output_dir, by default the Keras cache $KERAS_HOME/models, which
`octtl.models.build(arch, weights='imagenet')` searches. Reading `.pth` files needs torch
(`pip install octtl[convert]`); nothing else in octtl does. octtl/torchvision_weights.py holds the mapping.
"""

import os
import sys

from absl import app
from absl import flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from octtl import models  # noqa: E402  (after quieting TensorFlow)
from octtl import torchvision_weights  # noqa: E402

_ARCH = flags.DEFINE_enum("arch", None, list(torchvision_weights.SOURCES), "Network whose checkpoint it is.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "torchvision state dict (.pth); default: torch.hub's cached copy of the ImageNet one.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Folder for the Keras files; default: the Keras cache, $KERAS_HOME/models.")

flags.mark_flag_as_required("arch")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    arch = _ARCH.value
    checkpoint = os.path.expanduser(
        _CHECKPOINT.value or models.torch_hub_checkpoint(torchvision_weights.checkpoint_url(arch)))
    output_dir = os.path.expanduser(_OUTPUT_DIR.value or models.keras_models_dir())
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        sys.exit(f"import_torchvision_weights: error: --output_dir={output_dir}: not a directory")
    try:
        state_dict = torchvision_weights.read_checkpoint(arch, checkpoint)
        notop, top = torchvision_weights.write(arch, state_dict, output_dir)
    except torchvision_weights.CheckpointError as e:
        sys.exit(f"import_torchvision_weights: error: --checkpoint={e}")
    except torchvision_weights.ConversionError as e:
        sys.exit(f"import_torchvision_weights: error: --checkpoint={checkpoint}: {e}")
    except OSError as e:
        sys.exit(f"import_torchvision_weights: error: --output_dir={output_dir}: cannot write ({e})")
    print(f"{checkpoint}: {len(state_dict)} tensors -> {notop}, {top}")
    searched = [d for d in (os.environ.get(models.WEIGHTS_DIR_ENV), models.keras_models_dir()) if d]
    if os.path.abspath(output_dir) not in map(os.path.abspath, searched):
        print(f"weights='imagenet' finds them with --weights_dir={output_dir} or {models.WEIGHTS_DIR_ENV}={output_dir}")


def run():
    app.run(main)


if __name__ == "__main__":
    run()
