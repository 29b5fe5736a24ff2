"""Keeps tests quiet and off the home directory."""

import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="octtl-test-home-")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ["MPLCONFIGDIR"] = os.path.join(_HOME, "mpl")
os.environ.setdefault("MPLBACKEND", "Agg")
