"""Building blocks of the VQGAN encoder and decoder (after taming-transformers' diffusionmodules/model.py).

Plain Flax linen. Every block takes its layer constructors as fields, the flax ImageNet example's habit
(`conv: ModuleDef = nn.Conv`): `conv`, `norm` and `dropout_layer`, called with flax's own signatures.
The defaults are flax's layers; `vqgan_jax.backends` can pass others with the same signatures and the
same parameter names, so the parameter tree never depends on which layers computed it.

All modules are channels-last (NHWC). Activations are computed in the module's `dtype` (float32 or
bfloat16) while parameters stay float32; GroupNorm statistics and the attention softmax run in float32.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError

Dtype = Any
ModuleDef = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_from_name(name: str) -> Dtype:
    """The compute dtype named in a config: 'float32' | 'bfloat16' -> the jnp dtype."""
    if name not in _DTYPES:
        raise UserError(f"unknown dtype {name!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def num_groups_for(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= min(max_groups, channels) that divides `channels` (32 for taming's widths)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


# PyTorch's default Conv2d kernel init (kaiming_uniform with a=sqrt(5): U(+-1/sqrt(fan_in))), which taming
# trains with. A uniform draw also compiles about twice as fast as flax's truncated-normal default.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def conv(conv_layer: ModuleDef, features: int, kernel: int, dtype: Dtype, name: str | None, *, stride: int = 1,
         padding: Any = "SAME", use_bias: bool = True) -> nn.Module:
    """A square conv with taming's init: `conv_layer(features, (k, k), ...)`, float32 params, `dtype` compute.

    Parameters: 'kernel' (k, k, C_in, features) HWIO, 'bias' (features,) zeros unless use_bias=False.
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).
    """
    return conv_layer(features, (kernel, kernel), strides=(stride, stride), padding=padding, use_bias=use_bias,
                      dtype=dtype, kernel_init=torch_conv_init, name=name)


def normalize(norm_layer: ModuleDef, channels: int, dtype: Dtype, name: str) -> nn.Module:
    """taming's Normalize: GroupNorm (32 groups for widths that are multiples of 32), eps 1e-6, affine.

    Parameters 'scale' (C,) ones and 'bias' (C,) zeros; no running statistics, so the model needs no
    mutable batch stats.
    """
    return norm_layer(num_groups=num_groups_for(channels), epsilon=1e-6, dtype=dtype, name=name)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3 -> norm -> swish -> dropout -> conv3x3, plus a (1x1 when widths differ) shortcut.

    x: (B, H, W, C_in) -> (B, H, W, out_channels) in `dtype`. out_channels None keeps C_in.
    """
    out_channels: int | None = None
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c_in = x.shape[-1]
        c_out = self.out_channels or c_in
        h = nn.swish(normalize(self.norm, c_in, self.dtype, "norm1")(x))
        h = conv(self.conv, c_out, 3, self.dtype, "conv1")(h)
        h = nn.swish(normalize(self.norm, c_out, self.dtype, "norm2")(h))
        h = self.dropout_layer(self.dropout, name="dropout")(h, deterministic=not train)
        h = conv(self.conv, c_out, 3, self.dtype, "conv2")(h)
        if c_in != c_out:
            x = conv(self.conv, c_out, 1, self.dtype, "nin_shortcut")(x)
        return x.astype(self.dtype) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions with a residual connection.

    x: (B, H, W, C) -> (B, H, W, C) in `dtype`. q, k, v and the output projection are 1x1 convs, as in
    taming; logits and softmax run in float32 inside jax.nn.dot_product_attention.
    """
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        hn = normalize(self.norm, c, self.dtype, "norm")(x)
        # (B, HW, 1, C): one head of width C, the layout dot_product_attention expects (no transposes).
        q = conv(self.conv, c, 1, self.dtype, "q")(hn).reshape(b, h * w, 1, c)
        k = conv(self.conv, c, 1, self.dtype, "k")(hn).reshape(b, h * w, 1, c)
        v = conv(self.conv, c, 1, self.dtype, "v")(hn).reshape(b, h * w, 1, c)
        a = jax.nn.dot_product_attention(q, k, v).reshape(b, h, w, c)
        return x.astype(self.dtype) + conv(self.conv, c, 1, self.dtype, "proj_out")(a)


class Downsample(nn.Module):
    """Halve H and W: taming's asymmetric pad (0 before, 1 after) then a 3x3 stride-2 VALID conv.

    x: (B, H, W, C) with even H, W -> (B, H/2, W/2, C).
    """
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((0, 1), (0, 1))  # only bottom/right, as torch.nn.functional.pad(x, (0, 1, 0, 1)) in taming
        return conv(self.conv, x.shape[-1], 3, self.dtype, "conv", stride=2, padding=pad)(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour 2x, then a 3x3 conv (param 'conv': kernel (3, 3, C, C), bias).

    x: (B, H, W, C) -> (B, 2H, 2W, C) in `dtype`.
    """
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)                  # (B, 2H, 2W, C), nearest
        return conv(self.conv, c, 3, self.dtype, "conv")(x)
