"""`python tools/import_torchvision_weights.py`: the command `python -m octtl.import_torchvision_weights` (its flags and usage: octtl/import_torchvision_weights.py)."""

from octtl import import_torchvision_weights

if __name__ == "__main__":
    import_torchvision_weights.run()
