"""GPT-2's transformer block for XLA:CPU: `models.gpt2.Block` whose output gradient is written to memory.

A residual stream's gradient is a chain of cheap elementwise adds, one per layer, plus each layer's
normalisation backward. XLA:CPU fuses that whole chain into every consumer (the bias and weight
gradients, the next normalisation's reductions) and so recomputes, per element, the work of every later
layer: a cost quadratic in depth. Optimization barriers do not stop it (XLA:CPU drops them before
fusion), but a dot does, so the cotangent goes through a matmul with the identity (`sums.materialize`),
exact at HIGHEST precision. Same parameters and outputs as `models.gpt2.Block`.
"""
import jax

from vqgan_jax.backends.xla_cpu.sums import materialize
from vqgan_jax.models import gpt2


@jax.custom_vjp
def materialize_grad(x):
    """The identity, whose gradient is `materialize`d (see the module docstring)."""
    return x


def _materialize_grad_fwd(x):
    return x, None


def _materialize_grad_bwd(_, g):
    return (materialize(g),)


materialize_grad.defvjp(_materialize_grad_fwd, _materialize_grad_bwd)


class Block(gpt2.Block):
    """`models.gpt2.Block` with a materialized output gradient."""

    def __call__(self, x, *, train: bool, decode: bool, cache_index=None):
        return materialize_grad(super().__call__(x, train=train, decode=decode, cache_index=cache_index))
