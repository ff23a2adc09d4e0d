"""Causal self-attention functions for the GPT-2 prior (plain JAX).

- `causal_attention(q, k, v, *, dropout)`: a whole sequence at once (training, full forward passes).
  Without dropout it is `jax.nn.dot_product_attention(is_causal=True)`, which picks XLA's or cuDNN's
  kernel; with attention dropout it spells the softmax out, since that function has no dropout.
- `cached_attention(q, k_cache, v_cache, cache_index)`: new queries over a fixed-size KV cache (decoding).

`models.gpt2` takes the whole-sequence function as a field (`attention_fn`), so a backend can pass its
own with the same signature (`vqgan_jax.backends`).
"""
import math
from typing import Callable

import jax
import jax.numpy as jnp


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, dropout: Callable | None = None,
                     implementation: str | None = None) -> jax.Array:
    """Causal scaled dot-product attention: q, k, v (B, T, H, D) -> (B, T, H, D) in q's dtype.

    dropout: None, or a function applied to the attention weights (B, H, T, T) (training with
    attn_pdrop > 0). implementation: jax.nn.dot_product_attention's (None = XLA's choice, 'xla',
    'cudnn'); used when there is no dropout.
    """
    if dropout is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=implementation)
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(q.shape[-1])                          # (B, H, T, T) float32
    mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))[None, None]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = dropout(jax.nn.softmax(scores, axis=-1))
    return jnp.einsum("bhts,bshd->bthd", weights.astype(v.dtype), v)


def cached_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array, cache_index: jax.Array) -> jax.Array:
    """Attention of new queries over a fixed-size KV cache (decode mode).

    q: (B, T, H, D) at positions cache_index .. cache_index + T - 1; k_cache, v_cache: (B, H, S, D) with
    those positions already written. Query i sees keys at positions <= its own; the rest of the cache is
    either older tokens (kept) or not yet written (masked out). Returns (B, T, H, D) in q's dtype.
    """
    scores = jnp.einsum("bthd,bhsd->bhts", q, k_cache, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(q.shape[-1])                                  # (B, H, T, S) float32
    q_pos = cache_index + jnp.arange(q.shape[1])
    mask = jnp.arange(k_cache.shape[2])[None, :] <= q_pos[:, None]            # (T, S)
    weights = jax.nn.softmax(jnp.where(mask, scores, jnp.finfo(jnp.float32).min), axis=-1)
    return jnp.einsum("bhts,bhsd->bthd", weights.astype(v_cache.dtype), v_cache)
