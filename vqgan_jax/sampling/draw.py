"""New images from a run folder: token grids from the prior, painted by the VQGAN's decoder.

Each function rebuilds what it needs from the run folder alone (config.json + checkpoints, weights only)
and returns or writes images; `sample.py` is only their command line.
"""
from __future__ import annotations

import os

import jax
import numpy as np

from vqgan_jax import backends
from vqgan_jax.errors import UserError
from vqgan_jax.sampling import prior as prior_sampling
from vqgan_jax.train import loading
from vqgan_jax.viz import images as images_lib


def draw_samples(workdir: str, *, num: int, seed: int = 0, batch_size: int = 16, temperature=None, top_k=None,
                 top_p=None, cfg_scale=None, label=None, random_first_token: bool = False,
                 progress: bool = True, vqgan=None) -> np.ndarray:
    """Draws `num` images with the run's prior: uint8 (num, H, W, 3).

    Sampling settings default to the prior's config (prior.temperature, top_k, top_p, cfg_scale).
    label: a class id for every image (class-conditional priors) or None. The same seed gives the same
    images; batches are always full, so every call with these settings runs one compiled sampler.
    vqgan: `train.loading.load_vqgan(workdir)`'s result when the caller has it already (else loaded here).
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    prior = loading.load_prior(workdir)
    tokens, pcfg = prior.tokens, prior.config.prior
    temperature = pcfg.temperature if temperature is None else temperature
    top_k = pcfg.top_k if top_k is None else top_k
    top_p = pcfg.top_p if top_p is None else top_p
    if cfg_scale is not None and float(cfg_scale) != 1.0 and label is None:
        raise UserError("--cfg_scale needs --label (classifier-free guidance steers towards a class)")
    cfg_scale = pcfg.cfg_scale if cfg_scale is None else cfg_scale
    if label is not None:
        prior_sampling.make_prompt(tokens, 1, labels=[label])  # validates the label before any work
    vq = vqgan or loading.load_vqgan(workdir, prior.mesh)
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
        ids = prior_sampling.sample_grids(prior.model, prior.variables["params"], tokens, prior.layout["grid"],
                                          batch_size, rng, labels=labels, temperature=temperature, top_k=top_k,
                                          top_p=top_p, cfg_scale=cfg_scale, first_codes=first,
                                          chunk_len=backends.decode_chunk_len(prior.ops))
        out.append(images_lib.to_uint8(prior_sampling.decode_grids(vq, ids)))
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
    images_lib.write_grid(x, os.path.join(out_dir, "grid.png"))
    return paths
