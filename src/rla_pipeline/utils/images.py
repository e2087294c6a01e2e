"""Pixel conventions shared by every model that reads images (the DINO encoder, the pixel BC policy)."""
from __future__ import annotations

# ImageNet channel statistics (RGB, pixels in [0, 1]): DINO and ResNet weights were trained on inputs normalised
# with them, so images are normalised the same way before either network sees them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
