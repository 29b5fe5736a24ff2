r"""Converts a torchvision ImageNet checkpoint into the Keras weights files that `--weights=imagenet` loads.

  python tools/import_torchvision_weights.py --arch=resnet18 \
      --checkpoint=$HOME/.cache/torch/hub/checkpoints/resnet18-f37072fd.pth

Writes <arch>_imagenet_notop.weights.h5 (all but the last classifier: what fine-tuning needs) and
<arch>_imagenet.weights.h5 into --output_dir, by default the Keras cache $KERAS_HOME/models, which
`octtl.nets.models.build(arch, weights='imagenet')` searches. Reading `.pth` files needs torch
(`pip install octtl[convert]`); nothing else in octtl does. octtl/nets/torchvision_weights.py holds the mapping.
"""

import os

from absl import flags

from octtl.nets import registry
from octtl import cli
from octtl.errors import InputError
from octtl import console
from octtl.nets import pretrained

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "torchvision state dict (.pth); default: torch.hub's cached copy of the ImageNet one.")
# --arch: the network whose checkpoint it is; --output_dir: where the Keras files go (default: the Keras cache,
# $KERAS_HOME/models).
CONVERTIBLE = [name for name, entry in registry.ARCHITECTURES.items()
               if any(f.convert_from for f in entry.imagenet)]

# The shared flags this command takes (defined in octtl/cli.py), listed in its --help.
flags.declare_key_flag("arch")
flags.declare_key_flag("output_dir")



def main(argv):
    """The import_torchvision_weights command: converts --checkpoint into the Keras weights files of --arch."""
    cli.no_arguments(argv)
    cli.require("arch")
    if cli.ARCH.value not in CONVERTIBLE:
        raise InputError(f"--arch={cli.ARCH.value}: no torchvision checkpoint; choose from {', '.join(CONVERTIBLE)}")
    console.start_backend()
    from octtl.nets import torchvision_weights

    arch = cli.ARCH.value
    checkpoint = os.path.expanduser(
        _CHECKPOINT.value or pretrained.torch_hub_checkpoint(torchvision_weights.checkpoint_url(arch)))
    output_dir = os.path.expanduser(cli.OUTPUT_DIR.value or pretrained.keras_models_dir())
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise InputError(f"--output_dir={output_dir}: not a directory")
    try:
        state_dict = torchvision_weights.read_checkpoint(arch, checkpoint)
        notop, top = torchvision_weights.write(arch, state_dict, output_dir)
    except torchvision_weights.CheckpointError as e:
        raise InputError(f"--checkpoint={e}") from None
    except torchvision_weights.ConversionError as e:
        raise InputError(f"--checkpoint={checkpoint}: {e}") from None
    except OSError as e:
        raise InputError(f"--output_dir={output_dir}: cannot write ({e})") from None
    print(f"{checkpoint}: {len(state_dict)} tensors -> {notop}, {top}")
    searched = [d for d in (os.environ.get(pretrained.WEIGHTS_DIR_ENV), pretrained.keras_models_dir()) if d]
    if os.path.abspath(output_dir) not in map(os.path.abspath, searched):
        print(f"weights='imagenet' finds them with --weights_dir={output_dir} or {pretrained.WEIGHTS_DIR_ENV}={output_dir}")


run = cli.command(main)

if __name__ == "__main__":
    run()
