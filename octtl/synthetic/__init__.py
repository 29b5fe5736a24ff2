"""Synthetic RETOUCH-like volumes: the project's embedded default data set, and the tests' data.

Takes: a seed, a vendor's geometry and a number of volumes.
Gives: folders in the RETOUCH layout (`oct.mhd`/`.raw` and `reference.mhd`/`.raw` per volume), byte-identical per
seed (`render`, written by `python -m octtl.make_synthetic`); `retina` lays out the anatomy (layers, fovea, fluid
pockets of the three kinds, vessels) in millimetres.
"""
