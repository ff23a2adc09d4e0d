"""Single image files for the tools that read them outside tf.data (`--reconstruct`, folder comparisons)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vqgan_jax.data.folders import IMAGE_EXTENSIONS
from vqgan_jax.errors import UserError


def load_image(path: str, size: int) -> np.ndarray:
    """One image file -> float32 (size, size, 3) in [-1, 1]: RGB, short side resized, centre crop."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = size / min(w, h)
            im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - size) // 2, (h - size) // 2
            arr = np.asarray(im.crop((left, top, left + size, top + size)), np.float32)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    return arr / 127.5 - 1.0


def list_image_files(path: str, limit: int) -> list[str]:
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--reconstruct {path}: no such file or folder")
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"no images (.jpg/.png/...) found in {path}")
    return files[:limit]
