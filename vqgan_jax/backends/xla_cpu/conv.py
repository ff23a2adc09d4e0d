"""Convolutions written for XLA:CPU's fast paths, as layers with flax's signatures and parameter names.

- `conv2d(..., winograd_3x3=True)`: 3x3 stride-1 convs with >= 128 channels on one side and >= 64 on the
  other by Winograd's F(4x4, 3x3) (`winograd`): forward, input and kernel gradients.
- `upsample_conv`: nearest 2x then a 3x3 conv as four 2x2 convs on the input grid (16/36 of the
  multiply-adds), its input gradient one stride-2 4x4 conv of the output gradient (see there).
- `Conv`: `nn.Conv`'s signature over `conv2d` (each rule a field), the bias optionally added by
  `sums.add_bias`. `Upsample`: `nn.layers.Upsample` over `upsample_conv`.

All take channels-last inputs (B, H, W, C) and HWIO kernels (k, k, C, O).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.backends.xla_cpu import winograd
from vqgan_jax.backends.xla_cpu.sums import add_bias
from vqgan_jax.nn.layers import torch_conv_init

Dtype = Any

_CONV_DN = ("NHWC", "HWIO", "NHWC")


def _conv(x, w, strides, pads):
    return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=_CONV_DN)


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding, *, winograd_3x3: bool = True) -> jax.Array:
    """`lax.conv_general_dilated` for x (B, H, W, C) NHWC and w (k, k, C, O) HWIO -> (B, H', W', O).

    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)). winograd_3x3: a float32 3x3 stride-1
    'SAME' conv with >= 128 channels on one side and >= 64 on the other and H, W multiples of 4 runs by
    Winograd's F(4x4, 3x3), forward and both gradients (numbers within ~1e-5 of their scale).
    """
    # winograd.applies checks the kernel is 3x3 (and the channels, sizes and dtype).
    if stride == 1 and winograd_3x3 and _pads_one(padding) and winograd.applies(x.shape, w.shape, x.dtype):
        return _conv3x3(x, w)
    return _conv(x, w, (stride, stride), padding)


def _pads_one(padding) -> bool:
    """Whether a padding is 'SAME' or one pixel on every side (for a 3x3 stride-1 conv, the same thing)."""
    return padding == "SAME" or (
        not isinstance(padding, str) and tuple(tuple(int(p) for p in pq) for pq in padding) == ((1, 1), (1, 1)))


@jax.custom_vjp
def _conv3x3(x, w):
    return winograd.conv3x3(x, w)


def _conv3x3_fwd(x, w):
    return winograd.conv3x3(x, w), (x, w)


def _conv3x3_bwd(res, g):
    x, w = res
    # The input gradient is the 3x3 'SAME' conv of g with the kernel flipped and its channels swapped.
    dx = winograd.conv3x3(g, jnp.flip(w, (0, 1)).swapaxes(2, 3))
    return dx, winograd.kernel_grad3x3(x, g)


_conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


# Nearest 2x then a 3x3 conv, seen from the low-resolution grid: output row 2i+a only reads input rows
# i-1, i (a = 0) or i, i+1 (a = 1), so each of the 4 output phases is a 2x2 conv whose taps are sums of
# the 3x3 taps. _PHASE_TAPS[a, offset, tap] says which 3x3 taps (0..2) fold onto each of the 2 offsets.
_PHASE_TAPS = np.array([[[1, 0, 0], [0, 1, 1]],
                        [[1, 1, 0], [0, 0, 1]]], np.float32)  # numpy: no device array at import
# Input row i is read by output rows 2i-1 .. 2i+2, i.e. by window row r = 0..3 of a stride-2 4x4 window
# that starts at 2i-1: r = 0 is phase a = 1 through its offset 1, r = 1 phase 0 offset 1, r = 2 phase 1
# offset 0, r = 3 phase 0 offset 0 (the same along columns).
_WINDOW_PHASE = np.array([1, 0, 1, 0])
_WINDOW_OFFSET = np.array([1, 1, 0, 0])


def fold_upsample_kernel(kernel: jax.Array) -> jax.Array:
    """kernel float (3, 3, C, O) -> the 2x2 kernels of the four output phases, float32 (2, 2, 2, 2, C, O)
    indexed [row phase, column phase, row offset, column offset]; folded at HIGHEST precision."""
    return jnp.einsum("aip,bjq,pqco->abijco", _PHASE_TAPS, _PHASE_TAPS, kernel.astype(jnp.float32),
                      precision=jax.lax.Precision.HIGHEST)


def _phase_convs(x, phases):
    """x (B, H, W, C), phases (2, 2, 2, 2, C, O) -> the interleaved output (B, 2H, 2W, O)."""
    b, h, w, _ = x.shape
    rows = []
    for pa in range(2):
        cols = []
        for pb in range(2):
            pad = ((1, 0) if pa == 0 else (0, 1), (1, 0) if pb == 0 else (0, 1))
            cols.append(_conv(x, phases[pa, pb], (1, 1), pad))
        rows.append(jnp.stack(cols, axis=3))  # (B, H, W, 2, O): column phase
    return jnp.stack(rows, axis=2).reshape(b, 2 * h, 2 * w, -1)  # (B, H, 2, W, 2, O) -> (B, 2H, 2W, O)


@jax.custom_vjp
def _upsample_conv(x, phases):
    return _phase_convs(x, phases)


def _upsample_conv_fwd(x, phases):
    return _phase_convs(x, phases), (x, phases)


def _upsample_conv_bwd(res, g):
    x, phases = res
    # The transpose of the four phase convs reads g through one stride-2 4x4 window per input pixel.
    window = phases[_WINDOW_PHASE[:, None], _WINDOW_PHASE[None, :],
                    _WINDOW_OFFSET[:, None], _WINDOW_OFFSET[None, :]]         # (4, 4, C, O)
    dx = _conv(g, jnp.swapaxes(window, 2, 3), (2, 2), ((1, 1), (1, 1)))      # (B, H, W, C)
    dphases = jax.vjp(lambda p: _phase_convs(x, p), phases)[1](g)[0]
    return dx, dphases


_upsample_conv.defvjp(_upsample_conv_fwd, _upsample_conv_bwd)


def upsample_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Nearest-neighbour 2x upsampling then a 3x3 'SAME' conv, without materialising the 2x image.

    x: (B, H, W, C) in the compute dtype; kernel: (3, 3, C, O) float (folded in float32, then cast to
    x's dtype). Returns (B, 2H, 2W, O), no bias. Computed as four 2x2 convs on the input grid, one per
    output pixel phase, interleaved: 16/36 of the multiply-adds, and it keeps XLA:CPU off its slow
    kernel-gradient path for 128-channel 64x64 convs. Under autodiff the input gradient would be four
    convs of g's strided phases (four gathering copies of g); here it is written out as one stride-2
    4x4 conv of g. Same numbers to float32 rounding.
    """
    phases = fold_upsample_kernel(kernel).astype(x.dtype)
    return _upsample_conv(x, phases)


def _square(v) -> int:
    """An int or a pair of equal ints (flax's kernel_size / strides) -> the int."""
    if isinstance(v, int):
        return v
    v = tuple(v)
    if len(v) != 2 or v[0] != v[1]:
        raise ValueError(f"only square kernels and strides are supported here, got {v}")
    return int(v[0])


def _plus_bias(y: jax.Array, bias: jax.Array, bias_sum: bool, sharded_batch: bool) -> jax.Array:
    """y + bias; with the bias_sum rule its gradient is a `sums.bias_grad`, else autodiff's own."""
    return add_bias(y, bias, sharded_batch) if bias_sum else y + bias


class Conv(nn.Module):
    """`nn.Conv(features, kernel_size, strides, padding, use_bias, dtype, kernel_init)` for square 2-D convs.

    Parameters as flax's: 'kernel' (k, k, C_in, features), 'bias' (features,) zeros; x (B, H, W, C_in) ->
    (B, H', W', features) in `dtype`. The rule fields switch this backend's paths on (both by default):
    winograd_3x3 (see `conv2d`) and bias_sum (the bias gradient as a `sums.bias_grad`; sharded_batch: the
    batch axis is split over several devices).
    """
    features: int
    kernel_size: Any
    strides: Any = 1
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Dtype | None = None
    kernel_init: Any = torch_conv_init
    winograd_3x3: bool = True
    bias_sum: bool = True
    sharded_batch: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k, stride = _square(self.kernel_size), _square(self.strides)
        kernel = self.param("kernel", self.kernel_init, (k, k, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32) if self.use_bias else None
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        y = conv2d(x, kernel, stride, self.padding, winograd_3x3=self.winograd_3x3)
        if bias is None:
            return y
        return _plus_bias(y, bias.astype(dtype), self.bias_sum, self.sharded_batch)


class ConvParams(nn.Module):
    """Only the parameters of a kxk conv ('kernel' (k, k, C_in, features), 'bias'), initialised as taming's.

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
    """`nn.layers.Upsample` (nearest 2x then a 3x3 conv, params under 'conv') by `upsample_conv`.

    x: (B, H, W, C) -> (B, 2H, 2W, C) in `dtype`, without materialising the 2x image. `conv` is accepted
    for the plain layer's signature; the kernel is applied by `upsample_conv` instead.
    """
    dtype: Dtype = jnp.float32
    conv: Any = None
    bias_sum: bool = True
    sharded_batch: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        kernel, bias = ConvParams(c, 3, name="conv")(c)
        y = upsample_conv(x.astype(self.dtype), kernel)
        return _plus_bias(y, bias.astype(self.dtype), self.bias_sum, self.sharded_batch)
