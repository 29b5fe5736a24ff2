"""`python tools/make_synthetic.py`: the command `python -m octtl.make_synthetic` (its flags and usage: octtl/make_synthetic.py)."""

from octtl import make_synthetic

if __name__ == "__main__":
    make_synthetic.run()
