"""The data stage: from RETOUCH volumes or image folders to B-scans in memory, and the folds that split them.

Takes: MetaImage volumes (`oct.mhd` + `reference.mhd`) or folders of B-scan images.
Gives: TFRecord shards with `index.csv` and `manifest.json` (`records`, written by `python -m octtl.to_tfrecord`),
every B-scan decoded once into memory as the network's uint8 crop (`pipeline`), training batches (plain or
augmented: `augment`; denoised once at decoding: `denoise`), and the folds of the paper's designs (`folds`).
`metaimage` checks a header and its data bytes before SimpleITK reads a voxel; `names` keeps the files data
names inside itself (a header's data file, a manifest's shards) inside its folder; `volumes` owns the fluid codes,
the 8-bit rule and the per-B-scan labels.
"""
