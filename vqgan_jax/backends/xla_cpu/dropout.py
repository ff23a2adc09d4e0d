"""Dropout drawn from 16-bit random numbers: half the random bits of flax.linen.Dropout, same interface.

flax's Dropout draws one 32-bit uniform per element through threefry, which dominates the cost of
dropout on XLA:CPU. Here each 32-bit word from `jax.random.bits` gives two 16-bit
numbers u, and an element is kept where u >= t, t = round(rate * 65536): the rate is rounded to a
multiple of 1/65536 (0.1 becomes 0.100006) and the kept values are scaled by 65536 / (65536 - t), so the
output's expectation is x exactly. The two halves of each word go to the two halves of axis 1 (axis 0
for 1-D inputs), so with a batch-sharded axis 0 every device draws the bits of its own rows (no
communication), and the bits of the global array are the same on any number of devices.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

_LEVELS = 1 << 16


def _bits16(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform integers in [0, 65536) as uint32 of `shape` (at least 1-D), from half as many 32-bit words."""
    axis = 1 if len(shape) >= 2 else 0
    n = shape[axis]
    words = jax.random.bits(rng, shape[:axis] + ((n + 1) // 2,) + shape[axis + 1:], jnp.uint32)
    both = jnp.concatenate([words >> 16, words & 0xFFFF], axis=axis)
    return jax.lax.slice_in_dim(both, 0, n, axis=axis)


def dropout(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Zeroes each element of x with probability `rate` (rounded to a multiple of 1/65536) and scales
    the rest by 1 / (1 - that rate). x: any shape and float dtype -> same shape and dtype."""
    threshold = round(float(rate) * _LEVELS)
    if threshold <= 0:
        return x
    if threshold >= _LEVELS:
        return jnp.zeros_like(x)
    shape = x.shape or (1,)
    keep = _bits16(rng, shape) >= threshold
    scale = jnp.asarray(_LEVELS / (_LEVELS - threshold), x.dtype)
    return jnp.where(keep, x.reshape(shape) * scale, jnp.zeros((), x.dtype)).reshape(x.shape)


class Dropout(nn.Module):
    """flax.linen.Dropout's interface (`rate`, `deterministic`, rng stream 'dropout') over `dropout`.

    x -> x when deterministic (or rate 0), else `dropout(x, rate, make_rng('dropout'))`.
    """
    rate: float
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool | None = None) -> jax.Array:
        deterministic = nn.merge_param("deterministic", self.deterministic, deterministic)
        if deterministic or self.rate == 0:
            return x
        return dropout(x, self.rate, self.make_rng(self.rng_collection))
