"""`python tools/to_tfrecord.py`: the command `python -m octtl.to_tfrecord` (its flags: octtl/to_tfrecord.py)."""

from absl import flags

from octtl import to_tfrecord

flags.adopt_module_key_flags(to_tfrecord)  # --help lists the command's flags
__doc__ = to_tfrecord.__doc__  # and shows its usage

if __name__ == "__main__":
    to_tfrecord.run()
