"""Conditioning embeddings for denoisers: sinusoidal timestep features and the timestep/class MLP.

`timestep_embedding` is the transformer's sinusoidal position code applied to diffusion timesteps (DDPM,
ADM). `ConditionEmbedding` turns (t, label) into the vector every block of a U-Net or DiT is modulated by;
label `num_classes` is the null class that classifier-free guidance trains with (label dropout) and
samples with.
"""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """t: (B,) int or float timesteps -> float32 (B, dim): [cos(t f_i), sin(t f_i)] with frequencies
    f_i = max_period ** (-i / (dim / 2)), i < dim / 2 (a zero column pads an odd dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)   # (half,)
    args = t.astype(jnp.float32)[:, None] * freqs[None]                                     # (B, half)
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class ConditionEmbedding(nn.Module):
    """(t (B,), labels int (B,) | None) -> float32 (B, dim): MLP(sinusoid(t)) + class embedding.

    num_classes 0: unconditional (labels ignored, no table). Otherwise a table of num_classes + 1 rows;
    row num_classes is the null class, used where labels is None.
    """
    dim: int
    num_classes: int = 0
    freq_dim: int = 128
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array, labels: jax.Array | None) -> jax.Array:
        h = timestep_embedding(t, self.freq_dim)
        h = nn.Dense(self.dim, dtype=self.dtype, name="t_fc1")(h)
        h = nn.Dense(self.dim, dtype=self.dtype, name="t_fc2")(nn.swish(h))
        if self.num_classes > 0:
            if labels is None:
                labels = jnp.full((t.shape[0],), self.num_classes, jnp.int32)
            h = h + nn.Embed(self.num_classes + 1, self.dim, dtype=self.dtype, name="label_embed")(labels)
        return h.astype(jnp.float32)
