"""Train-state pytrees for both stages: plain arrays only, so orbax saves and restores them whole.

Optimizer *transformations* (optax objects) are not part of the state: the step binds them with
`functools.partial`, so the state holds nothing but arrays and checkpoints carry no code.
"""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class VQGANState:
    """Generator (autoencoder + quantizer) and discriminator state of stage 1.

    step: int32 scalar, the number of updates done.
    g_params / d_params: Flax params of the VQGAN and of the patch discriminator.
    g_opt / d_opt: optax states. vq_stats: the quantizer's non-gradient variables (usage EMA, EMA codebook).
    ema_params: EMA copy of g_params used for evaluation and sampling (a copy of g_params when EMA is off,
      never read then). lecam: EMAs of the discriminator's mean real / fake logits (LeCam regulariser).
    """
    step: jax.Array
    g_params: Any
    d_params: Any
    g_opt: Any
    d_opt: Any
    vq_stats: Any
    ema_params: Any
    lecam: Any


@flax.struct.dataclass
class PriorState:
    """State of the stage-2 prior: step, params, optimizer state."""
    step: jax.Array
    params: Any
    opt: Any


@flax.struct.dataclass
class DiffusionState:
    """State of the latent-diffusion prior: step, params, optimizer state, and the EMA of params that
    samples (a copy of params when EMA is off)."""
    step: jax.Array
    params: Any
    opt: Any
    ema_params: Any


def zero_lecam() -> dict:
    return {"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)}


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))
