"""Sums, dense layers, bias adds and GroupNorm written for XLA:CPU's fast paths (plain jnp
elsewhere).

- `tree_sum`: XLA:CPU rewrites a large sum into a reduce-window followed by a small reduce (its
  tree-reduction rewrite), and that reduce-window runs far below memory speed when its window strides
  over outer axes. On the 2-core CPU the (16, 256, 1024) bias gradient of the prior's MLP takes 14 ms
  as `jnp.sum(g, (0, 1))` and 0.65 ms as a chain of halving adds (x[:n/2] + x[n/2:], fused into one
  loop), which is what `tree_sum` computes.
- `dense`: x @ w + b with its gradient written out (see there).
- `add_bias` (a conv's bias) and `group_norm`: their sums (forward and backward) as `tree_sum`s. The flowers64
  VQGAN's CPU step (G + D, both compiled in one process, timed interleaved: `bench/ab.py`) takes 2.61 s
  with them and 2.87 s without (a rerun: 2.85 s and 2.98 s). `group_norm` also writes its per-channel
  coefficients out before the (B, N, C) maps that read them (`_materialize`): 2.67 s instead of 2.76 s
  per step (`bench/ab.py --stage vqgan --variants ours,no_materialize --reps 10`; an earlier scratch
  A/B of 14 steps each: 2.93 s against 3.05 s).
- `materialize_grad`: the identity whose CPU gradient cuts XLA:CPU's fusion of a residual stream's
  backward chain.

Elsewhere these are the plain formulas under autodiff: the backend is checked at trace time
(`jax.default_backend()`), and GPU/TPU compilers have neither problem.
"""
import functools
import math

import jax
import jax.numpy as jnp


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def _axes(axis, ndim: int) -> tuple[int, ...]:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _halving_sum(x: jax.Array, axis: int) -> jax.Array:
    """Sum over one axis as a chain of halving adds (pairwise summation); the axis is removed."""
    rest = []
    while x.shape[axis] > 1:
        n = x.shape[axis]
        if n % 2:  # odd: set the last slice aside and add it at the end
            rest.append(jax.lax.slice_in_dim(x, n - 1, n, axis=axis))
            n -= 1
        h = n // 2
        x = jax.lax.slice_in_dim(x, 0, h, axis=axis) + jax.lax.slice_in_dim(x, h, n, axis=axis)
    for r in rest:
        x = x + r
    return jnp.squeeze(x, axis)


def _merged_sum(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
    """Halving sum over each of `axes` in turn (innermost first); the axes are removed."""
    for a in reversed(axes):  # innermost first, so earlier axis numbers stay valid
        x = _halving_sum(x, a)
    return x


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _tree_sum(x, axes, shape):
    return _merged_sum(x, axes)


def _tree_sum_fwd(x, axes, shape):
    return _merged_sum(x, axes), None


def _tree_sum_bwd(axes, shape, _, g):
    return (jnp.broadcast_to(jnp.expand_dims(g, axes), shape),)


_tree_sum.defvjp(_tree_sum_fwd, _tree_sum_bwd)


def tree_sum(x: jax.Array, axis) -> jax.Array:
    """`jnp.sum(x, axis)` (axis: int or tuple), computed as pairwise halving adds on XLA:CPU.

    x: any shape and float dtype; returns x's shape without `axis`, in x's dtype (bfloat16 / float16
    inputs are summed in float32, then cast back). The gradient is the broadcast, as jnp.sum's. Adjacent
    reduced axes are summed as one (a (B, H, W, C) sum over (0, 1, 2) is one chain over B*H*W rows).
    """
    axes = _axes(axis, x.ndim)
    if not _on_cpu():
        return jnp.sum(x, axes)
    dtype = x.dtype
    # Merge each run of adjacent reduced axes into one (a reshape is free), then halve each run.
    shape, new_axes, i = [], [], 0
    while i < x.ndim:
        if i in axes:
            j = i
            while j + 1 < x.ndim and j + 1 in axes:
                j += 1
            new_axes.append(len(shape))
            shape.append(math.prod(x.shape[i:j + 1]))
            i = j + 1
        else:
            shape.append(x.shape[i])
            i += 1
    xm = x.reshape(shape)
    if dtype in (jnp.bfloat16, jnp.float16):
        xm = xm.astype(jnp.float32)
    return _tree_sum(xm, tuple(new_axes), tuple(shape)).astype(dtype)


@jax.custom_vjp
def _dense(x, w, b):
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))) + b


def _dense_fwd(x, w, b):
    return _dense(x, w, b), (x, w)


def _dense_bwd(res, g):
    x, w = res
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])   # (N, C_in), (N, C_out)
    return (g2 @ w.T).reshape(x.shape), x2.T @ g2, tree_sum(g2, 0)


_dense.defvjp(_dense_fwd, _dense_bwd)


def dense(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """x @ w + b: x (..., C_in), w (C_in, C_out), b (C_out,), all one dtype -> (..., C_out).

    On CPU the gradient is written out over the flattened rows: dx = g w^T, dw = x^T g (one dot that
    reads x and g in place), db a `tree_sum`. Under autodiff's own transpose of the dot, XLA:CPU wrote
    a transposed copy of g for each weight-gradient product and summed the bias gradient with its slow
    reduce-window. The flowers64 prior's CPU step (dropout 0; both compiled in one process, timed
    interleaved: `bench/ab.py`) takes 1.61 s with this rule and 1.87 s without (a rerun: 1.88 s and
    2.14 s), with the same loss to 7 digits.
    """
    if _on_cpu():
        return _dense(x, w, b)
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))) + b


@jax.custom_vjp
def _add_bias(y, b):
    return y + b


def _add_bias_fwd(y, b):
    return y + b, None


def _add_bias_bwd(_, g):
    return g, tree_sum(g, tuple(range(g.ndim - 1)))


_add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """y + b for y (..., C) and b (C,) of y's dtype; on CPU the bias gradient is a `tree_sum` over all
    leading axes (a conv's (B, H, W, C) output gradient summed over B*H*W rows)."""
    return _add_bias(y, b) if _on_cpu() else y + b


@jax.custom_vjp
def _scale_shift(x, scale, bias):
    return x * scale + bias


def _scale_shift_fwd(x, scale, bias):
    return x * scale + bias, (x, scale)


def _scale_shift_bwd(res, g):
    x, scale = res
    rows = tuple(range(g.ndim - 1))
    return g * scale, tree_sum(g * x, rows), tree_sum(g, rows)


_scale_shift.defvjp(_scale_shift_fwd, _scale_shift_bwd)


def scale_shift(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """x * scale + bias for x (..., C) and scale, bias (C,), one dtype (a normalisation's affine step).

    On CPU the scale and bias gradients are `tree_sum`s over all leading axes instead of XLA:CPU's
    reduce-windows (the prior's 17 LayerNorms: see `gpt2.LayerNorm`)."""
    return _scale_shift(x, scale, bias) if _on_cpu() else x * scale + bias


def _materialize(a: jax.Array) -> jax.Array:
    """a (..., C) unchanged, as the output of a dot with the identity (exact at HIGHEST precision).

    XLA:CPU fuses cheap producers into their consumers. A per-(batch, channel) coefficient built from
    per-group statistics (a repeat of (B, G) to (B, C), times a (C,) scale) would be recomputed for
    every element of the (B, N, C) map that reads it, through index arithmetic that keeps the loop
    from vectorising. A dot is never fused, so the map reads a plain (B, C) array.
    """
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    return jnp.einsum("...c,cd->...d", a, eye, precision=jax.lax.Precision.HIGHEST)


def _group_stats(x, groups, eps):
    """x (B, N, C) float32 -> the mean and 1/std of each channel's group, as (B, C)."""
    b, n, c = x.shape
    count = n * (c // groups)
    # Per-channel sums over the N positions first, then within each group.
    s1 = tree_sum(x, 1).reshape(b, groups, c // groups).sum(-1) / count              # (B, G)
    s2 = tree_sum(x * x, 1).reshape(b, groups, c // groups).sum(-1) / count
    rstd = jax.lax.rsqrt(jnp.maximum(s2 - s1 * s1, 0.0) + eps)
    per_channel = lambda a: jnp.repeat(a, c // groups, axis=1)                      # noqa: E731
    return per_channel(s1), per_channel(rstd)


def _group_norm_apply(x, scale, bias, groups, eps, materialize=lambda a: a):
    mean, rstd = _group_stats(x, groups, eps)
    mul = rstd * scale                        # one per-channel affine map
    shift = bias - mean * mul
    mul, shift = materialize(mul), materialize(shift)
    return x * mul[:, None, :] + shift[:, None, :], (mean, rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _group_norm(x, scale, bias, groups, eps):
    return _group_norm_apply(x, scale, bias, groups, eps, _materialize)[0]


def _group_norm_fwd(x, scale, bias, groups, eps):
    y, (mean, rstd) = _group_norm_apply(x, scale, bias, groups, eps, _materialize)
    return y, (x, _materialize(mean), _materialize(rstd), scale)


def _group_norm_bwd(groups, eps, res, g):
    # With xhat = (x - mean) * rstd and dxhat = g * scale, per group of count elements:
    # dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)). Only two per-channel sums over
    # the N positions are needed (of g and of g * xhat; scale is constant within a channel), and dx is
    # one per-channel map: dx = a g + b (x - mean) + c.
    x, mean, rstd, scale = res
    b, n, c = x.shape
    count = n * (c // groups)
    sum_g = tree_sum(g, 1)                                                             # (B, C)
    sum_gxhat = tree_sum(g * ((x - mean[:, None, :]) * rstd[:, None, :]), 1)
    group_mean = lambda a: jnp.repeat(a.reshape(b, groups, c // groups).sum(-1) / count,  # noqa: E731
                                      c // groups, axis=1)                             # (B, C)
    m1, m2 = group_mean(sum_g * scale), group_mean(sum_gxhat * scale)
    coef_g, coef_x, offset = (_materialize(a) for a in (rstd * scale, -rstd * rstd * m2, -rstd * m1))
    dx = coef_g[:, None, :] * g + coef_x[:, None, :] * (x - mean[:, None, :]) + offset[:, None, :]
    return dx, jnp.sum(sum_gxhat, 0), jnp.sum(sum_g, 0)


_group_norm.defvjp(_group_norm_fwd, _group_norm_bwd)


def group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int, eps: float) -> jax.Array:
    """GroupNorm of x (B, N, C) float32 over its N positions and C / groups channels per group.

    scale, bias (C,) float32 -> (B, N, C) float32. Variance E[x^2] - E[x]^2, clamped at 0. On CPU the
    per-channel sums of the forward and backward passes are `tree_sum`s under a written-out gradient,
    and the forward and backward maps read per-channel coefficients that a dot has written out (see
    `_materialize`; GroupNorm + swish forward + backward on the 2-core CPU: 20.6 ms instead of 22.5 ms
    at 16 x 64 x 64 x 64, 4.9 ms instead of 7.2 ms at 16 x 32 x 32 x 128); elsewhere the same formula
    under autodiff.
    """
    if _on_cpu():
        return _group_norm(x, scale, bias, groups, eps)
    return _group_norm_apply(x, scale, bias, groups, eps)[0]


@jax.custom_vjp
def materialize_grad(x):
    """Identity whose gradient XLA:CPU must write to memory: cuts the backward residual chain.

    A residual stream's gradient is a chain of cheap elementwise adds, one per layer, plus each layer's
    normalisation backward. XLA:CPU fuses that whole chain into every consumer (the bias and weight
    gradients, the next normalisation's reductions) and so recomputes, per element, the work of every
    later layer: a cost quadratic in depth. Optimization barriers do not stop it (XLA:CPU drops them
    before fusion), but a dot does, so on CPU the cotangent goes through a matmul with the identity,
    which is exact at HIGHEST precision (each output is x * 1 plus zeros). Other backends fuse with a
    cost model and skip it. The flowers64 prior's CPU step (dropout 0) takes 2.0 s with it and 3.4 s
    without (session 3; same loss).
    """
    return x


def _materialize_grad_fwd(x):
    return x, None


def _materialize_grad_bwd(_, g):
    return (_materialize(g) if _on_cpu() else g,)


materialize_grad.defvjp(_materialize_grad_fwd, _materialize_grad_bwd)
