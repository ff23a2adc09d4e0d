"""Originals over their reconstructions, for any image files (`sample.py --reconstruct`)."""
from __future__ import annotations

import numpy as np

from vqgan_jax.data.images import list_image_files, load_image
from vqgan_jax.train import loading
from vqgan_jax.viz import images as images_lib


def write_reconstructions(workdir: str, path: str, out: str, *, limit: int = 16) -> str:
    """Originals (top row) over their reconstructions (bottom row) for up to `limit` images -> out PNG."""
    vq = loading.load_vqgan(workdir)
    files = list_image_files(path, limit)
    x = np.stack([load_image(f, int(vq.config.data.image_size)) for f in files])
    x_hat = vq.run("reconstruct", x)
    picture = images_lib.originals_over_reconstructions(x, np.clip(np.asarray(x_hat), -1, 1))
    images_lib.save_png(out, picture)
    return out
