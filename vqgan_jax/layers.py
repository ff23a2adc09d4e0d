"""Building blocks of the VQGAN encoder and decoder (after taming-transformers' diffusionmodules/model.py).

All modules are channels-last (NHWC). Activations are computed in the module's `dtype` (float32 or
bfloat16) while parameters stay float32; GroupNorm statistics and the attention softmax always run in
float32 for stability.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.dropout import Dropout
from vqgan_jax.errors import UserError
from vqgan_jax.fastconv import conv2d, upsample_conv
from vqgan_jax.fastops import add_bias, dense, group_norm

Dtype = Any

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def dtype_from_name(name: str) -> Dtype:
    """The compute dtype named in a config: 'float32' | 'bfloat16' -> the jnp dtype."""
    if name not in _DTYPES:
        raise UserError(f"unknown dtype {name!r}: use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def init_fast(module: nn.Module, rngs: Any, *args: Any, **kwargs: Any) -> Any:
    """`module.init(rngs, *args, **kwargs)` compiled without XLA:CPU backend optimisation; keyword args
    are static. The values are the same as an optimised init's (see `parallel.run_once_jitted`)."""
    from vqgan_jax.parallel import run_once_jitted
    return run_once_jitted(functools.partial(module.init, **kwargs), rngs, *args)


def num_groups_for(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= min(max_groups, channels) that divides `channels` (32 for taming's widths)."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class GroupNorm(nn.Module):
    """GroupNorm over channels-last x: (B, H, W, C) -> same shape, in `dtype`; params 'scale', 'bias' (C,).

    Statistics are float32 whatever `dtype` is. Per-channel sums over H*W are taken first and then summed
    within each group, and the result is applied as one per-channel affine map: ~8x faster than
    flax.linen.GroupNorm's (B, HW, G, C/G) reductions on CPU, and the same numbers to float32 rounding.
    Variance is E[x^2] - E[x]^2 (as flax's default use_fast_variance), clamped at 0. Computed by
    `fastops.group_norm` (on CPU with a written-out gradient whose sums are `tree_sum`s).
    """
    num_groups: int = 32
    epsilon: float = 1e-6
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        g = self.num_groups
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        y = group_norm(x.reshape(b, h * w, c).astype(jnp.float32), scale, bias, g, self.epsilon)
        return y.reshape(b, h, w, c).astype(self.dtype)


def normalize(channels: int, dtype: Dtype = jnp.float32, name: str | None = None) -> GroupNorm:
    """taming's Normalize: GroupNorm(32 groups, eps 1e-6) with affine scale/bias.

    GroupNorm has no running statistics, so the model needs no mutable batch stats.
    """
    return GroupNorm(num_groups=num_groups_for(channels), epsilon=1e-6, dtype=dtype, name=name)


# PyTorch's default Conv2d kernel init (kaiming_uniform with a=sqrt(5): U(+-1/sqrt(fan_in))), which taming
# trains with. A uniform draw also compiles about twice as fast as flax's truncated-normal default.
torch_conv_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class Conv(nn.Module):
    """A square 2-D convolution with flax.linen.Conv's parameters ('kernel' (k, k, C_in, features) in
    taming's init, 'bias' zeros) and numbers; computed by `fastconv.conv2d`, the bias added by
    `fastops.add_bias`. A 1x1 stride-1 conv with a bias is `fastops.dense` over the channels.

    x: (B, H, W, C_in) -> (B, H', W', features) in `dtype`. padding: 'SAME', 'VALID' or ((top, bottom),
    (left, right)), as lax.conv_general_dilated takes it.
    """
    features: int
    kernel_size: int
    stride: int = 1
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.kernel_size
        kernel = self.param("kernel", torch_conv_init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        if k == 1 and self.stride == 1 and _no_padding(self.padding) and bias is not None:
            # A 1x1 conv is a dense layer over the channels; as `fastops.dense` its kernel gradient is one
            # dot instead of XLA:CPU's kernel-gradient conv, which transposes both operands first.
            return dense(x, kernel[0, 0], bias.astype(self.dtype))
        y = conv2d(x, kernel, self.stride, self.padding)
        return y if bias is None else add_bias(y, bias.astype(self.dtype))


def _no_padding(padding) -> bool:
    """Whether a 1x1 stride-1 conv with this padding keeps the input grid ('SAME', 'VALID' or zeros)."""
    return isinstance(padding, str) or all(lo == 0 and hi == 0 for lo, hi in padding)


def conv(features: int, kernel: int, dtype: Dtype, name: str | None = None, stride: int = 1,
         padding: Any = "SAME", use_bias: bool = True) -> Conv:
    """A 2-D convolution with float32 params computing in `dtype` (name None inside setup())."""
    return Conv(features, kernel, stride, padding, use_bias, dtype, name=name)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3 -> norm -> swish -> dropout -> conv3x3, plus a (1x1 when widths differ) shortcut.

    x: (B, H, W, C_in) -> (B, H, W, out_channels) in `dtype`. out_channels None keeps C_in.
    """
    out_channels: int | None = None
    dropout: float = 0.0
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        c_in = x.shape[-1]
        c_out = self.out_channels or c_in
        h = nn.swish(normalize(c_in, self.dtype, name="norm1")(x))
        h = conv(c_out, 3, self.dtype, "conv1")(h)
        h = nn.swish(normalize(c_out, self.dtype, name="norm2")(h))
        h = Dropout(self.dropout, deterministic=not train, name="dropout")(h)
        h = conv(c_out, 3, self.dtype, "conv2")(h)
        if c_in != c_out:
            x = conv(c_out, 1, self.dtype, "nin_shortcut")(x)
        return x.astype(self.dtype) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions with a residual connection.

    x: (B, H, W, C) -> (B, H, W, C) in `dtype`. Logits and softmax run in float32 inside
    jax.nn.dot_product_attention.
    """
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        hn = normalize(c, self.dtype, name="norm")(x)
        # (B, HW, 1, C): one head of width C, the layout dot_product_attention expects (no transposes).
        q = conv(c, 1, self.dtype, "q")(hn).reshape(b, h * w, 1, c)
        k = conv(c, 1, self.dtype, "k")(hn).reshape(b, h * w, 1, c)
        v = conv(c, 1, self.dtype, "v")(hn).reshape(b, h * w, 1, c)
        a = jax.nn.dot_product_attention(q, k, v).reshape(b, h, w, c)
        return x.astype(self.dtype) + conv(c, 1, self.dtype, "proj_out")(a)


class Downsample(nn.Module):
    """Halve H and W: taming's asymmetric pad (0 before, 1 after) then a 3x3 stride-2 VALID conv.

    x: (B, H, W, C) with even H, W -> (B, H/2, W/2, C).
    """
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pad = ((0, 1), (0, 1))  # only bottom/right, as torch.nn.functional.pad(x, (0, 1, 0, 1)) in taming
        return conv(x.shape[-1], 3, self.dtype, "conv", stride=2, padding=pad)(x)


class ConvParams(nn.Module):
    """Only the parameters of a kxk conv ('kernel' (k, k, C_in, features), 'bias'), initialised as `conv`'s.

    Called with C_in, returns (kernel, bias) float32, for layers that apply the kernel in their own way.
    """
    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
        k = self.kernel_size
        kernel = self.param("kernel", torch_conv_init, (k, k, in_features, self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return kernel, bias


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour 2x then a 3x3 conv (param 'conv': kernel (3, 3, C, C), bias).

    x: (B, H, W, C) -> (B, 2H, 2W, C) in `dtype`. Computed exactly as that (up to float rounding) but
    without materialising the 2x image: four 2x2 convs on the input grid, one per output phase, then
    interleaved (`fastconv.upsample_conv`). That is 16/36 of the multiply-adds, and it keeps XLA:CPU off
    its slow kernel-gradient path for 128-channel 64x64 convs (5x slower than the forward). A
    ConvTranspose would be ~5x slower.
    """
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel, bias = ConvParams(c, 3, name="conv")(c)
        y = upsample_conv(x.astype(self.dtype), kernel)
        return add_bias(y, bias.astype(self.dtype))
