"""`python tools/import_torchvision_weights.py`: the command `python -m octtl.import_torchvision_weights` (its flags: octtl/import_torchvision_weights.py)."""

from absl import flags

from octtl import import_torchvision_weights

flags.adopt_module_key_flags(import_torchvision_weights)  # --help lists the command's flags
__doc__ = import_torchvision_weights.__doc__  # and shows its usage

if __name__ == "__main__":
    import_torchvision_weights.run()
