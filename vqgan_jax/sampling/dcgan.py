"""New images from a DCGAN run folder (DIR/dcgan): the generator on fresh noise, nothing else restored.

`generate(workdir, num, seed, batch_size)` rebuilds the generator from DIR/dcgan/config.json and restores
only its weights (the EMA copy when the run kept one) and its BatchNorm running averages, never D or the
optimiser states. Image i is G(z_i) with z_i drawn from fold_in(PRNGKey(seed), i) and the stored
statistics (eval mode), so it depends on (seed, i) alone, not on num or batch_size.
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.models import dcgan
from vqgan_jax.train import parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like
from vqgan_jax.viz import images as images_lib

PART = "dcgan"


def load_generator(workdir: str):
    """(config, generator module, variables {'params', 'batch_stats'}, step) of DIR/dcgan's last checkpoint."""
    runs.require_checkpoint(workdir, PART, f"train it first: python train.py --config configs/dcgan/mnist.py "
                                           f"--workdir {workdir}")
    config = runs.read_config(workdir, PART)
    gen = dcgan.from_config(config)
    labels = jnp.zeros((1,), jnp.int32) if gen.num_classes else None
    shapes = jax.eval_shape(lambda r: gen.init(r, jnp.zeros((1, int(config.model.z_dim))), labels, train=False),
                            jax.random.PRNGKey(0))
    params_key = "ema_params" if float(config.optim.ema_decay) > 0 else "g_params"
    rep = parallel.replicated(parallel.make_mesh())
    abstract = {params_key: abstract_like(shapes["params"], rep),
                "g_stats": abstract_like(shapes.get("batch_stats", {}), rep)}
    with Checkpointer(runs.checkpoint_dir(workdir, PART), async_save=False) as ckpt:
        step = ckpt.latest_step()
        restored = ckpt.restore_parts(abstract, step)
    variables = {"params": restored[params_key], "batch_stats": restored["g_stats"]}
    return config, gen, variables, int(step)


@functools.lru_cache(maxsize=8)
def _apply(gen):
    return jax.jit(lambda v, z, labels: gen.apply(v, z, labels, train=False))


def noise(seed: int, start: int, n: int, z_dim: int) -> jax.Array:
    """z for images start .. start + n - 1: float32 (n, z_dim), row i from fold_in(PRNGKey(seed), start + i)."""
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(jnp.arange(start, start + n))
    return jax.vmap(lambda k: jax.random.normal(k, (z_dim,), jnp.float32))(keys)


def generate(workdir: str, num: int, seed: int = 0, batch_size: int = 64, *, label: int | None = None,
             progress: bool = False, **_unused_options) -> np.ndarray:
    """`num` new images from DIR/dcgan: uint8 (num, S, S, C) (C = data.channels: 3, or 1 for grayscale).

    label: the class of every image for a class-conditional run (default: classes in turn, i % classes).
    Batches are always full (`batch_size` images, the last one padded), so one compiled program serves
    every call with this batch size. Options of other generators (temperature, top_k, ...) are ignored.
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    config, gen, variables, _ = load_generator(workdir)
    if label is not None and not gen.num_classes:
        raise UserError(f"--label needs a class-conditional DCGAN; {workdir} was trained without labels")
    if label is not None and not 0 <= int(label) < gen.num_classes:
        raise UserError(f"--label {label} is not a class id in [0, {gen.num_classes})")
    apply = _apply(gen)
    starts = range(0, num, batch_size)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="sampling", unit="batch")
    out = []
    for start in starts:
        z = noise(seed, start, batch_size, int(config.model.z_dim))
        labels = None
        if gen.num_classes:
            ids = np.arange(start, start + batch_size) % gen.num_classes if label is None else \
                np.full((batch_size,), int(label))
            labels = jnp.asarray(ids, jnp.int32)
        out.append(images_lib.to_uint8(np.asarray(apply(variables, z, labels))))
    return np.concatenate(out)[:num]


def write_samples(workdir: str, out_dir: str, *, num: int, seed: int = 0, batch_size: int = 64,
                  **options) -> list[str]:
    """`generate(...)` written as out_dir/sample_NNNNN.png + out_dir/grid.png; returns the single images'
    paths. Grayscale images are written as 8-bit gray PNGs."""
    x = generate(workdir, num, seed, batch_size, progress=True, **options)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(x):
        paths.append(os.path.join(out_dir, f"sample_{i:05d}.png"))
        images_lib.save_png(paths[-1], image[..., 0] if image.shape[-1] == 1 else image)
    rgb = np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x
    images_lib.write_grid(rgb, os.path.join(out_dir, "grid.png"))
    return paths
