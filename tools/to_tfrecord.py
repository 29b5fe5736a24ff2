"""`python tools/to_tfrecord.py`: the command `python -m octtl.to_tfrecord` (its flags and usage: octtl/to_tfrecord.py)."""

from octtl import to_tfrecord

if __name__ == "__main__":
    to_tfrecord.run()
