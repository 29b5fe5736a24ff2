"""The command-line edge: the flags several octtl commands share, defined once, and how a command fails.

Only entry modules import this module; library modules take plain values and never see absl.flags. A flag two
commands share is defined here with a neutral default (None where the commands differ), and each command turns
None into its own default in `main`, so every entry module can be imported into one process (a notebook, a test
session) without two definitions of one flag.
"""

import sys

from absl import flags

from octtl import protocol

from octtl.nets import registry

VENDORS = ("spectralis", "cirrus", "topcon")

LOGDIR = flags.DEFINE_string("logdir", "runs", "Root of the run folders and TensorBoard logs.")
ARCH = flags.DEFINE_enum("arch", None, ["all", *registry.ARCHITECTURES],
                         "Network (Table I); octtl.max_batch also takes all (its default).")
IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Input side in pixels; default the network's (Table I).",
                                  lower_bound=1)
MIXED_PRECISION = flags.DEFINE_bool("mixed_precision", False, "float16 compute on GPU; softmax stays float32.")
JIT_COMPILE = flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.")
SEED = flags.DEFINE_integer("seed", protocol.SEED, "Seed: of folds, shuffling and initialisation (training), or of "
                            "the synthetic volumes (make_synthetic).")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace what an earlier run of the command wrote.")
MODEL = flags.DEFINE_string("model", None, "best.keras of an octtl run (its result.json beside it).")
OUTPUT = flags.DEFINE_string("output", None, "The file or folder the command writes (see the command's usage).")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "The folder the command writes.")
VENDOR = flags.DEFINE_multi_enum("vendor", None, ["all", *VENDORS],
                                 "Vendor(s), repeatable: make_synthetic writes these (default spectralis); "
                                 "to_tfrecord keeps only these (default all).")
WORKERS = flags.DEFINE_integer("workers", None, "How much runs at once: to_tfrecord's reading threads (default "
                               "min(4, cores)), the sweep's training processes (default 1).", lower_bound=1)


def require(command: str, *names: str):
    """Exits with one line when a required flag is missing or empty.

    Checked in `main` rather than with absl's validators, which are process-wide and would fire when another
    command (or a test) parses its own flags.
    """
    missing = [f"--{name}" for name in names if flags.FLAGS[name].value in (None, "", [])]
    if missing:
        sys.exit(f"{command}: error: {', '.join(missing)} required")


def no_arguments(argv):
    """Refuses positional arguments: every octtl command takes flags only."""
    if len(argv) > 1:
        from absl import app

        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
