"""In-project backbones that keras.applications lacks, written after torchvision's definitions."""
