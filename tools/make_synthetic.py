"""`python tools/make_synthetic.py`: the command `python -m octtl.make_synthetic` (its flags: octtl/make_synthetic.py)."""

from octtl.make_synthetic import run

if __name__ == "__main__":
    run()
