"""Winograd's minimal filtering F(4x4, 3x3) for 3x3 stride-1 'SAME' convolutions on XLA:CPU.

A 3x3 conv computes each 4x4 output tile from a 6x6 input tile with 4 * 4 * 9 = 144 multiply-adds per
channel pair; in the Winograd domain (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016) it takes 36: the input tile d and the kernel g are transformed (V = B^T d B, U = G g G^T), the
36 transformed positions are 36 independent (tiles, C) x (C, O) matmuls, and the output tile is
Y = A^T M A. The transforms are additions and multiplications by small constants, fused by XLA into
one pass over the input and one over the output.

Where it pays: on the 2-core CPU, a 16 x 32 x 32 x 128 -> 128 conv's forward takes 15 ms this way
against 26 ms for XLA's convolution, its kernel gradient 25 against 32 ms, and 64 -> 128 channels at
32 x 32 7.6 against 13 ms; with 64 channels in and out the transforms' memory traffic eats the gain
(the kernel gradient at 16 x 64 x 64 x 64: 46 against 39 ms). So `conv.conv2d` uses it where
one side has >= 128 channels and the other >= 64 (`applies`): for the forward conv, the input gradient
(itself a 3x3 'SAME' conv of the output gradient) and the kernel gradient (`kernel_grad3x3`).
Float32 only; the result differs from a direct convolution by float rounding amplified by the
transforms' constants (relative error ~1e-5 of the output's scale, against ~1e-6 direct).
"""
import jax
import jax.numpy as jnp
import numpy as np

# The transforms of F(4, 3) with interpolation points 0, 1, -1, 2, -2 and infinity.
_BT = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], np.float32)          # (6, 6): input tile -> Winograd domain
_G = np.array([[1 / 4, 0, 0],
               [-1 / 6, -1 / 6, -1 / 6],
               [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6],
               [1 / 24, -1 / 12, 1 / 6],
               [0, 0, 1]], np.float32)                    # (6, 3): kernel -> Winograd domain
_AT = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], np.float32)        # (4, 6): Winograd domain -> output tile
TILE = 4                                                  # output tile side
MIN_CHANNELS = 128


def applies(x_shape, kernel_shape, dtype) -> bool:
    """Whether `conv.conv2d` uses `conv3x3` (and `kernel_grad3x3`) for x (B, H, W, C) and kernel
    (3, 3, C, O): float32, H and W multiples of TILE, and channels where the transforms pay off, i.e.
    min(C, O) >= MIN_CHANNELS / 2 and max(C, O) >= MIN_CHANNELS. The rule is symmetric in C and O, so a
    conv's input gradient (a conv of O channels into C) takes the same path as its forward."""
    c, o = kernel_shape[2], kernel_shape[3]
    return (tuple(kernel_shape[:2]) == (3, 3) and x_shape[1] % TILE == 0 and x_shape[2] % TILE == 0
            and min(c, o) >= MIN_CHANNELS // 2 and max(c, o) >= MIN_CHANNELS and jnp.dtype(dtype) == jnp.float32)


def _combine(coefs, terms):
    """sum_i coefs[i] * terms[i] with the zero terms left out and +-1 as (negated) copies, so XLA
    fuses a short chain of adds."""
    out = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else t * float(c)
        out = t if out is None else out + t
    return out


def _tiles(x, a: int, coefs):
    """x (B, H', W', C) -> the a x a transformed tiles (a * a, B * th * tw, C): tile (i, j) reads pixels
    (TILE i + k, TILE j + l) for k, l < len(coefs[0]), combined by coefs (a, k) along rows, then columns."""
    taps = coefs.shape[1]
    b, hp, wp, c = x.shape
    th, tw = (hp - taps) // TILE + 1, (wp - taps) // TILE + 1
    rows = [x[:, k:k + TILE * (th - 1) + 1:TILE] for k in range(taps)]                  # (B, th, W', C) each
    v = []
    for rt in (_combine(coefs[i], rows) for i in range(a)):
        cols = [rt[:, :, k:k + TILE * (tw - 1) + 1:TILE] for k in range(taps)]           # (B, th, tw, C) each
        v.append(jnp.stack([_combine(coefs[j], cols) for j in range(a)]))
    return jnp.stack(v).reshape(a * a, b * th * tw, c)


def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A 3x3 stride-1 'SAME' conv: x float32 (B, H, W, C), kernel float32 (3, 3, C, O) HWIO ->
    float32 (B, H, W, O); H and W multiples of TILE. Differentiable (plain autodiff through the
    transforms and the matmuls), though `conv.conv2d` gives it a written-out gradient."""
    b, h, w, c = x.shape
    o = kernel.shape[-1]
    a = _BT.shape[0]                                      # 6: input tile side
    th, tw = h // TILE, w // TILE                          # tiles along H and W
    # Input transform B^T d B, rows then columns: tile (i, j) starts at padded pixel (4i, 4j).
    v = _tiles(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), a, _BT)                   # (36, tiles, C)
    u = jnp.einsum("ip,jq,pqco->ijco", _G, _G, kernel, precision=jax.lax.Precision.HIGHEST)
    m = jnp.einsum("ktc,kco->kto", v, u.reshape(a * a, c, o))                          # (36, tiles, O)
    m = m.reshape(a, a, b, th, tw, o)
    # Output transform A^T m A, rows then columns, written straight into the interleaved layout.
    z = [_combine(_AT[p], [m[i] for i in range(a)]) for p in range(TILE)]             # 4 x (6, B, th, tw, O)
    y = jnp.stack([jnp.stack([_combine(_AT[q], [zp[j] for j in range(a)]) for q in range(TILE)], axis=3)
                   for zp in z], axis=2)                                               # (B, th, 4, tw, 4, O)
    return y.reshape(b, h, w, o)


def kernel_grad3x3(x: jax.Array, g: jax.Array) -> jax.Array:
    """The kernel gradient of `conv3x3`: x float32 (B, H, W, C), g float32 (B, H, W, O) the output's
    cotangent -> float32 (3, 3, C, O) = G^T (V^T dM) G, with V the input's tiles and dM = A g A^T the
    cotangent's tiles. On the 2-core CPU, 16 x 32 x 32 x 128 -> 128: 25 ms against 32 ms for XLA's
    kernel-gradient convolution (which transposes both operands first); 16 x 64 x 64 x 128 -> 64:
    64 ms against 91 ms."""
    a = _BT.shape[0]
    v = _tiles(jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0))), a, _BT)                   # (36, tiles, C)
    dm = _tiles(g, a, _AT.T)                                                          # (36, tiles, O)
    # (36, C, tiles) x (36, tiles, O): the batched dot in XLA:CPU's canonical layout.
    du = jnp.einsum("kct,kto->kco", jnp.swapaxes(v, 1, 2), dm)
    du = du.reshape(a, a, *du.shape[1:])
    return jnp.einsum("ip,jq,ijco->pqco", _G, _G, du, precision=jax.lax.Precision.HIGHEST)
