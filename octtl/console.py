"""What octtl's commands print: their own lines only, counts in words, TensorFlow's start-up chatter kept away.

`count` writes "1 run", "2 runs", never "1 runs".

TensorFlow's C++ runtime writes start-up lines to file descriptor 2 before its logging is initialised ("All
log messages before absl::InitializeLog()", "oneDNN custom operations", "Could not find cuda drivers", "failed
call to cuInit"), which TF_CPP_MIN_LOG_LEVEL does not reach. `start_tensorflow` imports TensorFlow and touches
the devices with that descriptor pointed at a temporary file, then passes on anything that is not such a line.
`start_backend` starts whichever Keras backend the process runs on (KERAS_BACKEND): TensorFlow so, JAX or PyTorch
as they are (they start quietly).
`OCTTL_VERBOSE=1` shows everything, TensorFlow's and absl's INFO lines included.
"""

import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import re
import sys
import tempfile

from octtl.errors import InputError

VERBOSE_ENV = "OCTTL_VERBOSE"
BACKENDS = ("tensorflow", "jax", "torch")  # the Keras 3 backends octtl trains on
# glog-format lines (level, date, time, thread, file:line]) of the start-up, and their known companions.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*"
    r"|E\d{4} [\d:.]+\s+\d+ \S+:\d+\] .*(cuInit|CUDA|cuda|cuDNN|cuFFT|cuBLAS).*"
    r"|.*oneDNN custom operations are on.*"
    r"|.*This TensorFlow binary is optimized to use available CPU instructions.*"
    r"|.*rebuild TensorFlow with the appropriate compiler flags.*"
    r"|.*TF-TRT Warning: Could not find TensorRT.*)$")


def count(n: int, noun: str, plural: str = None) -> str:
    """`n` and the noun, singular for one (plural: noun + 's' unless given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def verbose() -> bool:
    """Whether the user asked to see TensorFlow's and absl's own lines."""
    return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


def start_tensorflow() -> list:
    """Imports TensorFlow and finds its devices quietly; returns the GPUs it sees.

    Any line it prints that is not known start-up chatter is passed on to stderr, so real problems still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "0" if verbose() else "2")
    if verbose():
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [line for line in text.splitlines() if line.strip() and not _NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)
    import logging

    from absl import logging as absl_logging

    # Keras' export and TensorFlow's Python side log INFO lines through absl and the "tensorflow" logger.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return gpus


def backend() -> str:
    """The Keras backend this process will run, found as Keras finds it but without importing Keras: KERAS_BACKEND,
    else the "backend" of keras.json (in KERAS_HOME, else ~/.keras), else TensorFlow."""
    name = os.environ.get("KERAS_BACKEND")
    if not name:
        try:
            with open(os.path.join(_keras_home(), "keras.json")) as f:
                name = json.load(f).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or "tensorflow"


def _keras_home() -> str:
    """Keras' folder: KERAS_HOME, else ~/.keras."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def start_tensorflow_backend(command: str) -> None:
    """Starts Keras on TensorFlow whatever KERAS_BACKEND says, for a command that exists only there (export's
    SavedModel).

    Raises:
        InputError: TensorFlow is not installed (one line naming the command; the others run without it).
    """
    if importlib.util.find_spec("tensorflow") is None:
        raise InputError(f"{command} needs TensorFlow, which is not installed (pip install tensorflow); training, "
                         "the sweep, predict and the report run without it on KERAS_BACKEND=jax or torch")
    os.environ["KERAS_BACKEND"] = "tensorflow"
    start_tensorflow()


class _WithoutTensorFlow(importlib.abc.MetaPathFinder):
    """A path finder that finds no `tensorflow`: importing it raises ModuleNotFoundError and find_spec gives None,
    exactly as without the package (raising instead would break libraries that only probe for it)."""

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorflow":
            return None
        return self.inner.find_spec(name, path, target)

    def invalidate_caches(self):
        self.inner.invalidate_caches()


def start_backend() -> str:
    """Imports Keras on its backend, quietly; returns the backend's name (octtl.nets.devices knows its GPUs).

    TensorFlow through `start_tensorflow`; JAX told not to preallocate the card (several --workers share it); on
    JAX and PyTorch, TensorFlow is kept out of the process even where it is installed.

    Raises:
        InputError: A backend octtl does not run on, or one that is not installed (one line naming it).
    """
    name = backend()
    if name not in BACKENDS:
        raise InputError(f"KERAS_BACKEND={name}: octtl runs on the Keras backends {', '.join(BACKENDS)}")
    if importlib.util.find_spec(name) is None:
        other = " or ".join(f"KERAS_BACKEND={b}" for b in BACKENDS if b != name)
        raise InputError(f"KERAS_BACKEND={name}: {name} is not installed; install it, or choose another backend "
                         f"({other})")
    if name == "tensorflow":
        start_tensorflow()
    else:
        if name == "jax":
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
            # Compiled programs kept on disk: every session of a sweep compiles the same networks at the same shapes,
            # which on a CPU costs tens of seconds each time (a warm cache: about one).
            os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_keras_home(), "jax_cache"))
            os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        if not verbose():
            from absl import logging as absl_logging

            # JAX logs its platform search through absl at INFO ("Unable to initialize backend 'tpu'").
            absl_logging.set_verbosity(absl_logging.WARNING)
        if "tensorflow" not in sys.modules:
            # Keras' set_random_seed (and TensorBoard's summary helpers) import TensorFlow wherever it is installed:
            # on this backend that costs seconds and prints TensorFlow's start-up lines for nothing, so the process
            # sees no TensorFlow, as where it is not installed (which tests/test_backends.py runs).
            sys.meta_path[:] = [_WithoutTensorFlow(f) if f is importlib.machinery.PathFinder else f
                                for f in sys.meta_path]
    import keras  # noqa: F401  (Keras reads KERAS_BACKEND here, once per process)

    return name
