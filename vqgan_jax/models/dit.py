"""A small DiT denoiser (Peebles & Xie 2023): a patchified transformer with adaLN-Zero conditioning.

x_t (B, h, w, C) float, t (B,) int, labels (B,) int | None -> output (B, h, w, C) float32. The grid is cut
into p x p patches (a strided conv), a learned position embedding is added, and each block modulates
its two pre-LayerNorms by shift / scale and gates its two residual branches, all six regressed from the
timestep + class embedding by a Dense initialised at zero, so every block starts as the identity; the
final layer is zero-initialised too (the output starts at 0).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.nn.embeddings import ConditionEmbedding

Dtype = Any


def _modulate(x, shift, scale):
    """x (B, N, D), shift/scale (B, D) -> x * (1 + scale) + shift."""
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """x (B, N, D), c float32 (B, D) -> (B, N, D): adaLN-Zero attention + MLP block."""
    num_heads: int
    mlp_ratio: float = 4.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
        d = x.shape[-1]
        mod = nn.Dense(6 * d, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="adaln")(nn.swish(c))
        shift1, scale1, gate1, shift2, scale2, gate2 = jnp.split(mod, 6, axis=-1)       # (B, D) each
        ln = dict(use_bias=False, use_scale=False, epsilon=1e-6, dtype=self.dtype)
        h = _modulate(nn.LayerNorm(**ln, name="norm1")(x), shift1, scale1)
        h = nn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, name="attn")(h, h)
        x = x + gate1[:, None] * h
        h = _modulate(nn.LayerNorm(**ln, name="norm2")(x), shift2, scale2)
        h = nn.Dense(int(d * self.mlp_ratio), dtype=self.dtype, name="mlp_fc1")(h)
        h = nn.Dense(d, dtype=self.dtype, name="mlp_fc2")(nn.gelu(h, approximate=True))
        return x + gate2[:, None] * h


class DiT(nn.Module):
    """The denoiser: see the module docstring. num_classes 0 = unconditional; label num_classes = null."""
    out_channels: int
    patch_size: int = 2
    hidden: int = 256
    depth: int = 6
    num_heads: int = 4
    num_classes: int = 0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        del train  # no dropout
        b, h, w, _ = x.shape
        p = self.patch_size
        if h % p or w % p:
            raise UserError(f"latent grid {h}x{w} is not divisible by diffusion.dit_patch={p}")
        gh, gw = h // p, w // p
        z = nn.Conv(self.hidden, (p, p), strides=(p, p), dtype=self.dtype, name="patch_embed")(x)
        z = z.reshape(b, gh * gw, self.hidden)                                            # (B, N, D)
        pos = self.param("pos_embed", nn.initializers.normal(0.02), (1, gh * gw, self.hidden), jnp.float32)
        z = z + pos.astype(z.dtype)
        c = ConditionEmbedding(self.hidden, self.num_classes, dtype=self.dtype, name="cond")(t, labels)
        for i in range(self.depth):
            z = DiTBlock(self.num_heads, dtype=self.dtype, name=f"block_{i}")(z, c)
        shift, scale = jnp.split(nn.Dense(2 * self.hidden, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                                          name="final_adaln")(nn.swish(c)), 2, axis=-1)
        z = _modulate(nn.LayerNorm(use_bias=False, use_scale=False, epsilon=1e-6, dtype=self.dtype,
                                   name="final_norm")(z), shift, scale)
        z = nn.Dense(p * p * self.out_channels, dtype=self.dtype, kernel_init=nn.initializers.zeros,
                     name="final_proj")(z)                                                # (B, N, p*p*C)
        z = z.reshape(b, gh, gw, p, p, self.out_channels).transpose(0, 1, 3, 2, 4, 5)      # (B, gh, p, gw, p, C)
        return z.reshape(b, h, w, self.out_channels).astype(jnp.float32)
