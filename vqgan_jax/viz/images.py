"""Image grids and PNG files: originals over reconstructions, sample grids, tiles."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float (…, H, W, 3) in [-1, 1] -> uint8 [0, 255] (clipped, rounded)."""
    x = np.asarray(x, np.float32)
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def grid(images_u8: np.ndarray, ncols: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 (N, H, W, 3) -> one uint8 picture with `ncols` columns, `pad` pixels between tiles."""
    n, h, w, c = images_u8.shape
    nrows = -(-n // ncols)
    out = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        out[y:y + h, x:x + w] = images_u8[i]
    return out


def originals_over_reconstructions(originals: np.ndarray, reconstructions: np.ndarray) -> np.ndarray:
    """float (N, H, W, 3) in [-1, 1] each -> uint8 picture: originals on the top row, reconstructions below."""
    n = originals.shape[0]
    both = np.concatenate([to_uint8(originals), to_uint8(reconstructions)], axis=0)
    return grid(both, ncols=n)


def write_grid(images_u8: np.ndarray, path: str) -> str:
    """uint8 (N, H, W, 3) -> one near-square grid PNG at path."""
    ncols = int(np.ceil(np.sqrt(len(images_u8))))
    save_png(path, grid(np.asarray(images_u8), ncols=ncols))
    return path


def save_png(path: str, image_u8: np.ndarray) -> None:
    """Writes atomically (temp file + rename) so a viewer never sees half a PNG."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    Image.fromarray(image_u8).save(tmp, format="PNG")
    os.replace(tmp, path)
