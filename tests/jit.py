"""Small helpers the tests share: run a module under one jit, init it cheaply."""
import functools

import jax

from vqgan_jax import backends
from vqgan_jax.train import parallel


def run(module, variables, *args, **kwargs):
    """module.apply under one jax.jit (op-by-op dispatch compiles every op separately: slower)."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def init(module, rngs, *args, **kwargs):
    """module.init(rngs, *args, **kwargs) compiled without XLA:CPU's backend optimisation (the values are
    the same: `tests/train/test_parallel.py`); keyword args are static."""
    return parallel.run_once_jitted(functools.partial(module.init, **kwargs), rngs, *args,
                                    compiler_options=backends.init_compiler_options("xla_cpu"))
