"""Image files for style transfer: float32 RGB in [0, 1], read with PIL (no tf.data: a handful of files)."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vqgan_jax.data.folders import IMAGE_EXTENSIONS
from vqgan_jax.data.images import load_image
from vqgan_jax.errors import UserError


def _open(path: str) -> Image.Image:
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


def load(path: str, long_side: int) -> np.ndarray:
    """One image file -> float32 (H, W, 3) in [0, 1], aspect ratio kept, long side resized to long_side
    (Lanczos; at least 1 px on the short side)."""
    if long_side <= 0:
        raise UserError(f"--size must be positive, got {long_side}")
    im = _open(path)
    w, h = im.size
    scale = long_side / max(w, h)
    im = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS)
    return np.asarray(im, np.float32) / 255.0


def load_square(path: str, size: int) -> np.ndarray:
    """One image file -> float32 (size, size, 3) in [0, 1]: short side resized, centre crop."""
    _open(path)  # the one-line error for a missing or unreadable file
    return (load_image(path, size) + 1.0) / 2.0


def list_images(folder: str) -> list[str]:
    """The image files of a folder, sorted; UserError when it holds none."""
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                   if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise UserError(f"no images ({'/'.join(IMAGE_EXTENSIONS)}) in the folder {folder}")
    return files


def fit_short_side(images: np.ndarray, short_side: int) -> np.ndarray:
    """float32 (B, H, W, 3) in [0, 1] -> the same with its short side resized to short_side (Lanczos)."""
    out = []
    for x in images:
        h, w = x.shape[:2]
        scale = short_side / min(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        if size == (w, h):
            out.append(np.asarray(x, np.float32))
            continue
        planes = [np.asarray(Image.fromarray(x[..., c].astype(np.float32), mode="F").resize(size, Image.LANCZOS))
                  for c in range(3)]
        out.append(np.clip(np.stack(planes, -1), 0.0, 1.0))
    return np.stack(out)
