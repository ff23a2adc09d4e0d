"""Sums and elementwise steps written for XLA:CPU's fast paths, shared by the backend's layers.

- `tree_sum`: XLA:CPU rewrites a large sum into a reduce-window followed by a small reduce (its
  tree-reduction rewrite), and that reduce-window runs far below memory speed when its window strides
  over outer axes. On the 2-core CPU the (16, 256, 1024) bias gradient of the prior's MLP takes 14 ms
  as `jnp.sum(g, (0, 1))` and 0.65 ms as a chain of halving adds (x[:n/2] + x[n/2:], fused into one
  loop), which is what `tree_sum` computes.
- `bias_grad`, `add_bias`: a bias add whose gradient is a `tree_sum` over all leading axes, or, when the
  batch axis is split over several devices, a plain sum over the batch first (see `bias_grad`).
- `materialize`: the identity as a dot, which XLA:CPU never fuses into its consumers.

Nothing here checks the backend: these functions are only used by the layers of this package, which a
trainer picks for CPU meshes (`vqgan_jax.backends`).
"""
import functools
import math

import jax
import jax.numpy as jnp


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
    """`jnp.sum(x, axis)` (axis: int or tuple), computed as pairwise halving adds.

    x: any shape and float dtype; returns x's shape without `axis`, in x's dtype (bfloat16 / float16
    inputs are summed in float32, then cast back). The gradient is the broadcast, as jnp.sum's. Adjacent
    reduced axes are summed as one (a (B, H, W, C) sum over (0, 1, 2) is one chain over B*H*W rows).
    """
    axes = _axes(axis, x.ndim)
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


def bias_grad(g: jax.Array, sharded_batch: bool = False) -> jax.Array:
    """The gradient of a bias added along g's last axis: g (B, ..., C) summed over every other axis, in g's
    dtype.

    One device (sharded_batch=False): one `tree_sum` over all B*...*rows, the fastest on XLA:CPU. With the
    batch axis split over several devices (sharded_batch=True): a plain sum over B first (each device sums
    its own examples, then one all-reduce), then a `tree_sum` of the rest. Halving a sharded axis would
    move half of it between devices at every halving step: on 8 CPU devices the tiny stage-1 step
    compiled in 20.4-21.0 s that way and in 14.4-15.7 s this way (bench/compile_time.py). On one device
    the batch-first order is slower (tried as a change not kept: the flowers64 stage-1 step 2.67-2.85 s
    instead of 2.30-2.63 s in alternating runs of bench/train_step.py), hence the two.
    """
    if not sharded_batch:
        return tree_sum(g, tuple(range(g.ndim - 1)))
    g = jnp.sum(g, 0)
    return tree_sum(g, tuple(range(g.ndim - 1))) if g.ndim > 1 else g


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def add_bias(y, b, sharded_batch: bool = False):
    """y + b for y (B, ..., C) and b (C,) of y's dtype; the bias gradient is a `bias_grad` (a conv's
    (B, H, W, C) output gradient summed over B*H*W rows)."""
    return y + b


def _add_bias_fwd(y, b, sharded_batch):
    return y + b, None


def _add_bias_bwd(sharded_batch, _, g):
    return g, bias_grad(g, sharded_batch)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def materialize(a: jax.Array) -> jax.Array:
    """a (..., C) unchanged, as the output of a dot with the identity (exact at HIGHEST precision).

    XLA:CPU fuses cheap producers into their consumers. A per-(batch, channel) coefficient built from
    per-group statistics (a repeat of (B, G) to (B, C), times a (C,) scale) would be recomputed for
    every element of the (B, N, C) map that reads it, through index arithmetic that keeps the loop
    from vectorising. A dot is never fused, so the map reads a plain (B, C) array.
    """
    eye = jnp.eye(a.shape[-1], dtype=a.dtype)
    return jnp.einsum("...c,cd->...d", a, eye, precision=jax.lax.Precision.HIGHEST)
