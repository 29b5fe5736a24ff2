"""`python tools/to_tfrecord.py`: the command `python -m octtl.to_tfrecord` (its flags: octtl/to_tfrecord.py)."""

from octtl.to_tfrecord import run

if __name__ == "__main__":
    run()
