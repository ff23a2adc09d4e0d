"""Small helpers the tests share: run a module under one jit, init it cheaply, draw test data without
compiling."""
import functools

import jax
import numpy as np

from vqgan_jax import backends
from vqgan_jax.train import parallel


def run(module, variables, *args, **kwargs):
    """module.apply under one jax.jit (op-by-op dispatch compiles every op separately: slower)."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def init(module, rngs, *args, **kwargs):
    """module.init(rngs, *args, **kwargs) compiled without XLA:CPU's backend optimisation, as the trainers
    initialise (some weights may differ from an eager init's by an ulp); keyword args are static."""
    return parallel.run_once_jitted(functools.partial(module.init, **kwargs), rngs, *args,
                                    compiler_options=backends.init_compiler_options("xla_cpu"))


def normal(seed: int, shape) -> np.ndarray:
    """Standard normal test data float32 `shape` from numpy (an eager jax.random draw compiles a kernel per
    shape, 0.5-2 s each on a 2-core CPU)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
