"""The pictures a user asks for from a run folder: samples, reconstructions, the learned codebook.

Each function rebuilds what it needs from the run folder alone (config.json + checkpoints) and
writes PNG files; `sample.py` is only their command line.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from PIL import Image

from vqgan_jax import generate, images as images_lib, tokens as tokens_lib
from vqgan_jax.errors import UserError
from vqgan_jax.folders import IMAGE_EXTENSIONS


def draw_samples(workdir: str, *, num: int, seed: int = 0, batch_size: int = 16, temperature=None, top_k=None,
                 top_p=None, cfg_scale=None, label=None, random_first_token: bool = False,
                 progress: bool = True, vqgan=None) -> np.ndarray:
    """Draws `num` images with the run's prior: uint8 (num, H, W, 3).

    Sampling settings default to the prior's config (prior.temperature, top_k, top_p, cfg_scale).
    label: a class id for every image (class-conditional priors) or None. The same seed gives the same
    images; batches are always full, so every call with these settings runs one compiled sampler.
    vqgan: `tokens.restore_vqgan(workdir)`'s result when the caller has it already (else restored here).
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    model, params, tokens, layout, _ = generate.load_prior(workdir)
    from vqgan_jax import runs
    pcfg = runs.read_config(workdir, "prior").prior
    temperature = pcfg.temperature if temperature is None else temperature
    top_k = pcfg.top_k if top_k is None else top_k
    top_p = pcfg.top_p if top_p is None else top_p
    if cfg_scale is not None and float(cfg_scale) != 1.0 and label is None:
        raise UserError("--cfg_scale needs --label (classifier-free guidance steers towards a class)")
    cfg_scale = pcfg.cfg_scale if cfg_scale is None else cfg_scale
    if label is not None:
        generate.make_prompt(tokens, 1, labels=[label])  # validates the label before any work
    _, vq_setup, vq_state, _ = vqgan or tokens_lib.restore_vqgan(workdir)
    key = jax.random.PRNGKey(seed)
    batches = range(0, num, batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="sampling", unit="batch", total=len(batches))
    out = []
    for start in batches:
        rng = jax.random.fold_in(key, start)
        labels = None if label is None else np.full((batch_size,), int(label))
        first = (np.asarray(jax.random.randint(jax.random.fold_in(rng, 1), (batch_size,), 0, tokens.num_codes))
                 if random_first_token else None)
        ids = generate.sample_grids(model, params, tokens, layout["grid"], batch_size, rng, labels=labels,
                                    temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale,
                                    first_codes=first)
        out.append(images_lib.to_uint8(generate.decode_grids(vq_setup, vq_state, ids)))
    return np.concatenate(out)[:num]


def write_samples(workdir: str, out_dir: str, *, num: int, **kwargs) -> list[str]:
    """`draw_samples(workdir, num=num, **kwargs)` written as out_dir/sample_NNNNN.png + out_dir/grid.png.
    Returns the paths of the single images."""
    x = draw_samples(workdir, num=num, **kwargs)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(x):
        paths.append(os.path.join(out_dir, f"sample_{i:05d}.png"))
        images_lib.save_png(paths[-1], image)
    write_grid(x, os.path.join(out_dir, "grid.png"))
    return paths


def write_grid(images_u8: np.ndarray, path: str) -> str:
    """uint8 (N, H, W, 3) -> one near-square grid PNG at path."""
    ncols = int(np.ceil(np.sqrt(len(images_u8))))
    images_lib.save_png(path, images_lib.grid(np.asarray(images_u8), ncols=ncols))
    return path


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


def write_reconstructions(workdir: str, path: str, out: str, *, limit: int = 16) -> str:
    """Originals (top row) over their reconstructions (bottom row) for up to `limit` images -> out PNG."""
    config, setup, state, _ = tokens_lib.restore_vqgan(workdir)
    files = list_image_files(path, limit)
    x = np.stack([load_image(f, int(config.data.image_size)) for f in files])
    x_hat, _ = setup.reconstruct(state, x)
    picture = images_lib.originals_over_reconstructions(x, np.clip(np.asarray(x_hat), -1, 1))
    images_lib.save_png(out, picture)
    return out


def code_usage(workdir: str, num_codes: int) -> np.ndarray | None:
    """Per-code counts over the encoded training set (DIR/tokens), or None when not encoded yet."""
    if tokens_lib.read_meta(workdir) is None:
        return None
    ids, _, _ = tokens_lib.load_tokens(workdir)
    return np.bincount(ids.ravel(), minlength=num_codes)


def write_codebook(workdir: str, out: str, *, tile_pixels: int = 32, vqgan=None) -> str:
    """The learned codebook: every code decoded as a tile (a whole token grid of that one code, shown at
    tile_pixels), ordered by usage when DIR/tokens exists, with a usage histogram below (seed 001's picture).

    The grid has the training size because attention layers sit at fixed spatial resolutions.
    vqgan: `tokens.restore_vqgan(workdir)`'s result when the caller has it already (else restored here).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, setup, state, _ = vqgan or tokens_lib.restore_vqgan(workdir)
    k = int(config.quantizer.num_codes)
    usage = code_usage(workdir, k)
    order = np.argsort(-usage, kind="stable") if usage is not None else np.arange(k)
    side = int(config.data.image_size) // 2 ** (len(config.model.ch_mult) - 1)
    tiles = []
    for start in range(0, k, 64):
        codes = np.zeros(64, np.int64)  # always a full batch: one compiled decoder
        codes[: len(order[start:start + 64])] = order[start:start + 64]
        ids = np.broadcast_to(codes[:, None, None], (64, side, side))
        x = images_lib.to_uint8(generate.decode_grids(setup, state, ids))[: len(order[start:start + 64])]
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
