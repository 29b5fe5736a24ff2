"""The command-line edge: the flags several octtl commands share, defined once, and how a command runs and fails.

Only entry modules import this module; library modules take plain values and never see absl.flags. A flag two
commands share is defined here with a neutral default (None where the commands differ), and each command turns
None into its own default in `main`, so every entry module can be imported into one process (a notebook, a test
session) without two definitions of one flag.

`command(main)` is every command's entry point: absl parses the flags (`--help` lists the command's own and
exits 0, under `python -m octtl.X`, a console script or a tools/ shim alike) and the project's error types
(octtl.errors.USER_ERRORS) become one line, `<command>: error: <message>`, and exit status 1.
"""

import functools
import os
import sys
from typing import Callable, Mapping, Optional

from absl import app, flags

from octtl import errors, protocol
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
GROUP_REGEX = flags.DEFINE_string(
    "group_regex", None, "Image folders: the first capture group of this regex on each file stem names its group "
    r"(e.g. '^[A-Z]+-(\d+)-\d+$' gives Kermany's patient): to_tfrecord's volume/id, so --group_by_volume keeps "
    "patients whole; predict's unit of the bootstrap over class folders.")
CALIBRATED = flags.DEFINE_bool("calibrated", False, "Apply the temperature the model's run fitted on its validation "
                               "predictions (Guo et al. 2017); default: the model as trained.")
WORKERS = flags.DEFINE_integer("workers", None, "How much runs at once: to_tfrecord's reading threads (default "
                               "min(4, cores)), the sweep's training processes (default 1).", lower_bound=1)


def require(*names: str):
    """Refuses, in one line, a required flag that is missing or empty.

    Checked in `main` rather than with absl's validators, which are process-wide and would fire when another
    command (or a test) parses its own flags.
    """
    missing = [f"--{name}" for name in names if flags.FLAGS[name].value in (None, "", [])]
    if missing:
        raise errors.InputError(f"{', '.join(missing)} required")


def no_arguments(argv):
    """Refuses positional arguments: every octtl command takes flags only."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")


HELP_FLAGS = ("--help", "-help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")


def guarded(main: Callable, context: Optional[Mapping[type, str]] = None) -> Callable:
    """`main` with the project's errors turned into one line and exit status 1, as `command` runs it.

    Args:
        main: A command's `main(argv)`.
        context: Error type -> the flag it concerns, put before the message (e.g. {ModelError: "--model"}).
    """
    name = main.__module__.rsplit(".", 1)[-1] if main.__module__ != "__main__" else _main_name()

    @functools.wraps(main)
    def wrapper(argv):
        try:
            return main(argv)
        except errors.USER_ERRORS as e:
            flag = next((f"{flag}: " for kind, flag in (context or {}).items() if isinstance(e, kind)), "")
            sys.exit(f"{name}: error: {flag}{e}")

    return wrapper


def command(main: Callable, context: Optional[Mapping[type, str]] = None) -> Callable[[], None]:
    """A command's entry point (console script, `python -m`, tools/ shim): flags parsed, `guarded(main)` run.

    `--help` prints the command's usage and its own flags and exits 0 (absl exits 1), whichever way the command
    was started: where the command's module is not `__main__` (a console script or a shim imported it), its key
    flags and usage are lent to the running script, which absl's help reads.
    """
    def run():
        module = sys.modules[main.__module__]
        if main.__module__ != "__main__":
            main_module = sys.modules["__main__"]
            main_module.__doc__ = module.__doc__
            for flag in flags.FLAGS.get_key_flags_for_module(module):
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
        app.run(guarded(main, context), flags_parser=_parse)

    run.guarded = guarded(main, context)  # what in-process callers (tests, notebooks) run with parsed flags
    return run


def _parse(argv):
    """absl's parsing, with --help a success: exit 0, so `octtl-train --help && ...` chains."""
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as e:
        if e.code == 1 and any(arg.split("=", 1)[0] in HELP_FLAGS for arg in argv[1:]):
            raise SystemExit(0) from None
        raise


def _main_name() -> str:
    return os.path.splitext(os.path.basename(sys.argv[0]))[0]
