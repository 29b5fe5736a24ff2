"""`python tools/make_synthetic.py`: the command `python -m octtl.make_synthetic` (its flags: octtl/make_synthetic.py)."""

from absl import flags

from octtl import make_synthetic

flags.adopt_module_key_flags(make_synthetic)  # --help lists the command's flags
__doc__ = make_synthetic.__doc__  # and shows its usage

if __name__ == "__main__":
    make_synthetic.run()
