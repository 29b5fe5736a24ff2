"""What octtl's commands print: their own lines only, counts in words, TensorFlow's start-up chatter kept away.

`count` writes "1 run", "2 runs", never "1 runs".

TensorFlow's C++ runtime writes start-up lines to file descriptor 2 before its logging is initialised ("All
log messages before absl::InitializeLog()", "oneDNN custom operations", "Could not find cuda drivers", "failed
call to cuInit"), which TF_CPP_MIN_LOG_LEVEL does not reach. `start_tensorflow` imports TensorFlow and touches
the devices with that descriptor pointed at a temporary file, then passes on anything that is not such a line.
`OCTTL_VERBOSE=1` shows everything, TensorFlow's and absl's INFO lines included.
"""

import os
import re
import sys
import tempfile

VERBOSE_ENV = "OCTTL_VERBOSE"
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
