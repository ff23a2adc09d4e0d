"""A dense layer for XLA:CPU with `nn.Dense`'s call signature and parameters, its gradient written out.

`Dense(features, kernel_init, dtype)`: x @ w + b with dx = g w^T, dw = x^T g over the flattened rows
(one dot that reads x and g in place) and db a `sums.bias_grad`. Under autodiff's own transpose of the
dot, XLA:CPU wrote a transposed copy of g for each weight-gradient product and summed the bias gradient
with its slow reduce-window.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.backends.xla_cpu.sums import bias_grad

Dtype = Any


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense(x, w, b, sharded_batch: bool = False):
    """x @ w + b: x (B, ..., C_in), w (C_in, C_out), b (C_out,), all one dtype -> (B, ..., C_out).
    sharded_batch: the batch axis is split over several devices (see `sums.bias_grad`)."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))) + b


def _dense_fwd(x, w, b, sharded_batch):
    return dense(x, w, b, sharded_batch), (x, w)


def _dense_bwd(sharded_batch, res, g):
    x, w = res
    x2, g2 = x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1])   # (N, C_in), (N, C_out)
    return (g2 @ w.T).reshape(x.shape), x2.T @ g2, bias_grad(g, sharded_batch)


dense.defvjp(_dense_fwd, _dense_bwd)


class Dense(nn.Module):
    """`nn.Dense(features, kernel_init, dtype)`: 'kernel' (C_in, features), 'bias' zeros, float32 params;
    x (..., C_in) -> (..., features) in `dtype`."""
    features: int
    kernel_init: Any = nn.initializers.lecun_normal()
    dtype: Dtype | None = None
    sharded_batch: bool = False  # the batch axis is split over several devices (`sums.bias_grad`)

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        dtype = self.dtype or jnp.result_type(x, jnp.float32)
        return dense(x.astype(dtype), kernel.astype(dtype), bias.astype(dtype), self.sharded_batch)
