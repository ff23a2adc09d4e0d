"""The learned codebook as a picture: every code decoded as a tile, ordered by use, with a usage histogram."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vqgan_jax.data import tokens as tokens_lib
from vqgan_jax.train import loading, runs
from vqgan_jax.viz import images as images_lib


def code_usage(workdir: str, num_codes: int) -> np.ndarray | None:
    """Per-code counts over the encoded training set (DIR/tokens), or None when not encoded yet."""
    if tokens_lib.read_meta(runs.tokens_dir(workdir)) is None:
        return None
    ids, _, _ = tokens_lib.load_tokens(runs.tokens_dir(workdir))
    return np.bincount(ids.ravel(), minlength=num_codes)


def write_codebook(workdir: str, out: str, *, tile_pixels: int = 32, vqgan=None) -> str:
    """The learned codebook: every code decoded as a tile (a whole token grid of that one code, shown at
    tile_pixels), ordered by usage when DIR/tokens exists, with a usage histogram below (the PyTorch VQGAN
    study's codebook picture).

    The grid has the training size because attention layers sit at fixed spatial resolutions.
    vqgan: `train.loading.load_vqgan(workdir)`'s result when the caller has it already (else loaded here).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vq = vqgan or loading.load_vqgan(workdir)
    config = vq.config
    k = int(config.quantizer.num_codes)
    usage = code_usage(workdir, k)
    order = np.argsort(-usage, kind="stable") if usage is not None else np.arange(k)
    side = int(config.data.image_size) // 2 ** (len(config.model.ch_mult) - 1)
    tiles = []
    for start in range(0, k, 64):
        codes = np.zeros(64, np.int64)  # always a full batch: one compiled decoder
        codes[: len(order[start:start + 64])] = order[start:start + 64]
        ids = np.broadcast_to(codes[:, None, None], (64, side, side))
        x = np.clip(np.asarray(vq.run("decode_ids", ids.astype(np.int32)), np.float32), -1.0, 1.0)
        x = images_lib.to_uint8(x)[: len(order[start:start + 64])]
        tiles += [np.asarray(Image.fromarray(t).resize((tile_pixels, tile_pixels), Image.BILINEAR)) for t in x]
    tiles = np.stack(tiles)
    ncols = int(np.ceil(np.sqrt(k) * 2))
    mosaic = images_lib.grid(tiles, ncols=ncols, pad=1)
    rows = 2 if usage is not None else 1
    mosaic_h = 12 * mosaic.shape[0] / mosaic.shape[1]
    fig, axes = plt.subplots(rows, 1, figsize=(12, mosaic_h + 0.6 + 3 * (rows - 1)),
                             gridspec_kw={"height_ratios": [mosaic_h, 3][:rows]})
    axes = np.atleast_1d(axes)
    axes[0].imshow(mosaic)
    axes[0].set_axis_off()
    title = f"{k} codes" + (" (most used first)" if usage is not None else "")
    axes[0].set_title(title)
    if usage is not None:
        used = int((usage > 0).sum())
        axes[1].bar(np.arange(k), usage[order], width=1.0, color="tab:blue")
        axes[1].set_xlabel("code rank")
        axes[1].set_ylabel("count in training tokens")
        axes[1].set_title(f"usage: {used}/{k} codes used ({100.0 * used / k:.1f}%)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
