"""The networks: the ten of Table I, built with the paper's head swap, and where their ImageNet weights come from.

Takes: a network's name, an input size, the number of classes and a weights source.
Gives: a Keras model mapping 0..255 gray B-scans to class probabilities (`models`), the Table I facts of each
network (`registry`, a plain table), the weights file to load (`pretrained`: search path, checksums, the
packaged SqueezeNet file in `weights/`), torchvision checkpoints converted to Keras files
(`torchvision_weights`), and the backbones keras.applications lacks, one file each (alexnet, googlenet,
resnet18, squeezenet; `tiny` for tests only).
"""
