"""The error types octtl raises for things a user can fix; entry modules turn each into one line and exit 1.

Each message names the file or flag and says what is wrong with it, so the line alone is enough to act on.
"""


class InputError(ValueError):
    """Bad input data or settings; the message names the file or flag and what is wrong with it."""


class WeightsError(Exception):
    """Weights that cannot be found, fetched, converted or loaded exactly into the network."""


class ModelError(Exception):
    """A model file that is not a usable octtl model; the message names the file."""


# What a command reports as one line and exit status 1 (octtl.cli.command); anything else is a bug and keeps its
# traceback.
USER_ERRORS = (InputError, WeightsError, ModelError)
