"""A U-Net denoiser for latent diffusion (DDPM / ADM layout, sized for small latent grids).

x_t (B, h, w, C) float, t (B,) int, labels (B,) int | None -> the network output (B, h, w, C) float32
(epsilon or v, whichever the trainer's objective asks for). Levels of ResNet blocks conditioned on the
timestep + class embedding (scale and shift after the second GroupNorm, ADM's "use_scale_shift_norm"),
self-attention at the resolutions listed in attn_resolutions (and in the middle), skip connections from
every down block to the up path, and a zero-initialised output conv, so training starts from the output 0.

Plain Flax with injectable layers (`conv`, `norm`, `dropout_layer`, `upsample`, as the VQGAN's), reusing
`nn.layers`' attention and down/upsampling blocks.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.nn.embeddings import ConditionEmbedding
from vqgan_jax.nn.layers import AttnBlock, Downsample, ModuleDef, Upsample, conv, normalize

Dtype = Any


class TimeResBlock(nn.Module):
    """norm -> swish -> conv3x3 -> norm * (1 + scale) + shift -> swish -> dropout -> conv3x3 (zero init),
    plus a 1x1 shortcut when the width changes. x (B, H, W, C_in), emb float32 (B, E) -> (B, H, W, C_out)."""
    out_channels: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, *, train: bool) -> jax.Array:
        c_in, c_out = x.shape[-1], self.out_channels
        h = nn.swish(normalize(self.norm, c_in, self.dtype, "norm1")(x))
        h = conv(self.conv, c_out, 3, self.dtype, "conv1")(h)
        ss = nn.Dense(2 * c_out, dtype=self.dtype, name="emb_proj")(nn.swish(emb))[:, None, None, :]
        scale, shift = jnp.split(ss, 2, axis=-1)                                  # (B, 1, 1, C_out) each
        h = normalize(self.norm, c_out, self.dtype, "norm2")(h) * (1 + scale) + shift
        h = self.dropout_layer(self.dropout, name="dropout")(nn.swish(h), deterministic=not train)
        # Zero init: each block starts as the identity, which keeps a deep U-Net trainable from step 0.
        h = self.conv(c_out, (3, 3), padding="SAME", dtype=self.dtype, kernel_init=nn.initializers.zeros,
                      name="conv2")(h)
        if c_in != c_out:
            x = conv(self.conv, c_out, 1, self.dtype, "nin_shortcut")(x)
        return x.astype(self.dtype) + h


class UNet(nn.Module):
    """The denoiser: see the module docstring. num_classes 0 = unconditional; label num_classes = null."""
    out_channels: int
    ch: int = 64
    ch_mult: Sequence[int] = (1, 2)
    num_res_blocks: int = 2
    attn_resolutions: Sequence[int] = (8,)
    num_classes: int = 0
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout
    upsample: ModuleDef = Upsample

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, labels: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        f = 2 ** (len(self.ch_mult) - 1)
        if x.shape[1] % f or x.shape[2] % f:
            raise UserError(f"latent grid {x.shape[1]}x{x.shape[2]} is not divisible by {f}, the downsampling "
                            f"of diffusion.ch_mult={tuple(self.ch_mult)}")
        lay = dict(dropout=self.dropout, dtype=self.dtype, conv=self.conv, norm=self.norm,
                   dropout_layer=self.dropout_layer)
        emb = ConditionEmbedding(4 * self.ch, self.num_classes, dtype=self.dtype, name="cond")(t, labels)
        h = conv(self.conv, self.ch, 3, self.dtype, "conv_in")(x)
        skips = [h]
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = TimeResBlock(self.ch * mult, **lay, name=f"down_{i}_block_{j}")(h, emb, train=train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.dtype, self.conv, self.norm, name=f"down_{i}_attn_{j}")(h)
                skips.append(h)
            if i != len(self.ch_mult) - 1:
                h = Downsample(self.dtype, self.conv, name=f"down_{i}_downsample")(h)
                skips.append(h)
        h = TimeResBlock(h.shape[-1], **lay, name="mid_block_1")(h, emb, train=train)
        h = AttnBlock(self.dtype, self.conv, self.norm, name="mid_attn")(h)
        h = TimeResBlock(h.shape[-1], **lay, name="mid_block_2")(h, emb, train=train)
        for i in reversed(range(len(self.ch_mult))):
            for j in range(self.num_res_blocks + 1):
                h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)   # (B, H, W, C + C_skip)
                h = TimeResBlock(self.ch * self.ch_mult[i], **lay, name=f"up_{i}_block_{j}")(h, emb, train=train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.dtype, self.conv, self.norm, name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = self.upsample(self.dtype, self.conv, name=f"up_{i}_upsample")(h)
        h = nn.swish(normalize(self.norm, h.shape[-1], self.dtype, "norm_out")(h))
        out = self.conv(self.out_channels, (3, 3), padding="SAME", dtype=self.dtype,
                        kernel_init=nn.initializers.zeros, name="conv_out")(h)
        return out.astype(jnp.float32)
