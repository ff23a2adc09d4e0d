"""Optimizers and learning-rate schedules for both stages.

Stage 1 uses Adam (b1 0.5, b2 0.9, as taming) for the generator and the discriminator with separate
learning rates; stage 2 uses AdamW with a decay mask by parameter path (no decay on biases, LayerNorm
or embeddings) and warmup + cosine. Gradient clipping by global norm is optional for both.
"""
from __future__ import annotations

from typing import Any

import jax
import optax


def warmup_constant(lr: float, warmup_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `lr` over `warmup_steps`, then constant."""
    if warmup_steps <= 0:
        return optax.constant_schedule(lr)
    return optax.linear_schedule(0.0, lr, warmup_steps)


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int, final_fraction: float = 0.1) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine decay to `final_fraction * lr` at `total_steps`."""
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=max(warmup_steps, 0),
        decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * final_fraction)


def adam(lr: float, *, b1: float, b2: float, warmup_steps: int = 0, grad_clip: float = 0.0) -> optax.GradientTransformation:
    """Adam with optional warmup and global-norm clipping (stage-1 G and D)."""
    parts = []
    if grad_clip > 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(optax.adam(warmup_constant(lr, warmup_steps), b1=b1, b2=b2))
    return optax.chain(*parts)


def decay_mask(params: Any) -> Any:
    """True where weight decay applies: 2-D+ kernels of Dense layers, never biases, LayerNorm scales or
    embedding tables (GPT-2's `wte` / `wpe`, and any `embedding` leaf)."""
    def keep(path, leaf):
        names = [getattr(k, "key", getattr(k, "name", str(k))) for k in path]
        if any(n in ("wte", "wpe") for n in names):
            return False
        return names[-1] == "kernel" and leaf.ndim >= 2
    return jax.tree_util.tree_map_with_path(keep, params)


def adamw(lr: float, *, b1: float, b2: float, weight_decay: float, warmup_steps: int, total_steps: int,
          grad_clip: float = 0.0) -> optax.GradientTransformation:
    """AdamW with a path-based decay mask and warmup + cosine (the stage-2 prior)."""
    parts = []
    if grad_clip > 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    parts.append(optax.adamw(warmup_cosine(lr, warmup_steps, total_steps), b1=b1, b2=b2,
                             weight_decay=weight_decay, mask=decay_mask))
    return optax.chain(*parts)
