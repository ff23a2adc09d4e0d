"""Single image files for the tools that read them outside tf.data (`--reconstruct`, folder comparisons)."""
from __future__ import annotations

import os

import numpy as np

from vqgan_jax.data.folders import IMAGE_EXTENSIONS
from vqgan_jax.errors import UserError


def load_image(path: str, size: int) -> np.ndarray:
    """One image file -> float32 (size, size, 3) in [-1, 1]: decoded, cropped and resized exactly as
    training's held-out images are (`pipeline.load_file`), so reconstructions and evaluation see the
    pixels the model was trained on (16-bit PNGs included)."""
    from vqgan_jax.data import pipeline  # TensorFlow only where files are read
    if not os.path.isfile(path):
        raise UserError(f"cannot read image {path}: no such file")
    return pipeline.load_file(path, size).astype(np.float32)


def list_image_files(path: str, limit: int) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--reconstruct {path}: no such file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"no images (.jpg/.png/...) found in {path}")
    return files[:limit]
