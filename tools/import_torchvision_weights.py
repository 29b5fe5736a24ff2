"""`python tools/import_torchvision_weights.py`: the command `python -m octtl.import_torchvision_weights` (its flags: octtl/import_torchvision_weights.py)."""

from octtl.import_torchvision_weights import run

if __name__ == "__main__":
    run()
