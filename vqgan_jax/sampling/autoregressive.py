"""Autoregressive sampling for any prior (flax lm1b's temperature sampler, extended).

What lives here:
- `filter_logits`: top-k and top-p (nucleus) masking of a (B, V) logits table;
- `guided_logits`: classifier-free guidance arithmetic;
- `sample`: the KV-cache sampler. The prior plugs in as a callback
  `tokens_to_logits(tokens int32 (R, 1), cache) -> (logits float (R, V), new_cache)`, so tests drive it
  with a fake model and any prior reuses it;
- `sample_no_cache`: the same sampler recomputing the whole prefix every step (for benchmarks and as a
  reference): `sequence_to_logits(tokens int32 (R, L), state) -> logits float (R, L, V)`;
- `make_gpt2_sampler`: both callbacks for our `GPT2LMHead`.

Both samplers run a `lax.fori_loop` over a fixed-size token buffer inside one `jax.jit`: nothing
recompiles per token, and a second call with the same shapes, callback, num_steps, top_k and on/off
switches (top-p, guidance) reuses the compiled loop; temperature, top_p and cfg_scale are traced values.
The token at position t + 1 is drawn with the key `fold_in(rng, t + 1)`, so the two samplers draw the
same tokens from the same logits.

Classifier-free guidance: the R = 2B rows hold B conditional rows and then their B unconditional
rows (e.g. the class token replaced by a null class). Logits are combined as
uncond + cfg_scale * (cond - uncond), the one drawn token is written to both halves, and only the
conditional half is returned.
"""
import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.models.gpt2 import GPT2LMHead, init_cache, resize_cache


def filter_logits(logits, *, top_k: int = 0, top_p=None):
    """Masks all but the allowed tokens with -inf.

    logits: float (B, V). top_k: keep exactly the k largest logits (0 = off; ties broken by index).
    top_p: keep the smallest set of most likely tokens whose probabilities sum to >= top_p (the top
    token is always kept); None or a Python number >= 1 = off. Applied after top-k, on the
    renormalised probabilities of the tokens top-k kept (as Hugging Face's warpers do).
    Returns float32 (B, V).
    """
    logits = jnp.asarray(logits, jnp.float32)
    rows = jnp.arange(logits.shape[0])[:, None]
    if 0 < top_k < logits.shape[-1]:
        _, idx = jax.lax.top_k(logits, top_k)                               # (B, k)
        keep = jnp.zeros(logits.shape, bool).at[rows, idx].set(True)
        logits = jnp.where(keep, logits, -jnp.inf)
    if top_p is not None and not (isinstance(top_p, (int, float)) and top_p >= 1.0):
        order = jnp.argsort(-logits, axis=-1)                               # most likely first (stable)
        probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
        mass_before = jnp.cumsum(probs, axis=-1) - probs                    # (B, V), 0 for the top token
        # A token is kept while the tokens above it hold less than top_p; top_p >= 1 keeps all
        # (the float cumsum may pass 1.0 before the tail).
        keep_sorted = (mass_before < top_p) | (jnp.asarray(top_p) >= 1.0)
        keep = jnp.zeros(logits.shape, bool).at[rows, order].set(keep_sorted)
        logits = jnp.where(keep, logits, -jnp.inf)
    return logits


def guided_logits(logits, cfg_scale):
    """Classifier-free guidance: logits float (2B, V), conditional rows first -> float32 (B, V)
    = uncond + cfg_scale * (cond - uncond); cfg_scale 1 gives the conditional logits, 0 the unconditional."""
    cond, uncond = jnp.split(jnp.asarray(logits, jnp.float32), 2, axis=0)    # (B, V) each
    return uncond + cfg_scale * (cond - uncond)


def _next_token(logits, key, temperature, top_p, cfg_scale, *, top_k: int, use_top_p: bool, use_cfg: bool):
    """logits float (R, V) -> int32 (R,). temperature == 0 is exactly argmax (greedy)."""
    logits = guided_logits(logits, cfg_scale) if use_cfg else logits.astype(jnp.float32)
    scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
    filtered = filter_logits(scaled, top_k=top_k, top_p=top_p if use_top_p else None)
    # The Gumbel-max draw of jax.random.categorical, and greedy decoding, share one argmax.
    noisy = filtered + jax.random.gumbel(key, filtered.shape, jnp.float32)
    token = jnp.argmax(jnp.where(temperature > 0, noisy, logits), axis=-1).astype(jnp.int32)
    return jnp.concatenate([token, token]) if use_cfg else token


def _start_buffer(prompt, num_steps):
    """prompt int32 (R, P) -> buffer int32 (R, P + num_steps) with the prompt in front."""
    return jnp.zeros((prompt.shape[0], prompt.shape[1] + num_steps), jnp.int32).at[:, :prompt.shape[1]].set(prompt)


def _write(buffer, t, drawn, prompt_len):
    """Writes drawn (R,) at position t + 1 unless that position belongs to the prompt."""
    given = jax.lax.dynamic_index_in_dim(buffer, t + 1, axis=1, keepdims=False)
    token = jnp.where(t + 1 < prompt_len, given, drawn)
    return jax.lax.dynamic_update_index_in_dim(buffer, token, t + 1, axis=1)


_STATIC = ("num_steps", "top_k", "use_top_p", "use_cfg")


def _chunks(num_loop_steps: int, chunk_len: int) -> tuple[tuple[int, int], ...]:
    """Loop steps [0, num_loop_steps) as consecutive (start, stop) ranges of chunk_len steps (the last
    may be shorter); chunk_len 0 = one range."""
    step = chunk_len or max(num_loop_steps, 1)
    return tuple((a, min(a + step, num_loop_steps)) for a in range(0, num_loop_steps, step))


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=_STATIC + ("chunks",))
def _sample_cached(tokens_to_logits, cache, prompt, rng, temperature, top_p, cfg_scale, *,
                   num_steps, top_k, use_top_p, use_cfg, chunks):
    prompt_len = prompt.shape[1]
    choose = functools.partial(_next_token, top_k=top_k, use_top_p=use_top_p, use_cfg=use_cfg)

    def step(t, carry):
        buffer, cache = carry
        token = jax.lax.dynamic_slice_in_dim(buffer, t, 1, axis=1)           # (R, 1): the token at t
        logits, cache = tokens_to_logits(token, cache)                      # (R, V): for position t + 1
        drawn = choose(logits, jax.random.fold_in(rng, t + 1), temperature, top_p, cfg_scale)
        return _write(buffer, t, drawn, prompt_len), cache

    # Prompt tokens are fed one by one too (drawn tokens discarded). With a resizable cache the steps
    # run in chunks, each with a cache just long enough for the positions written by the chunk's end:
    # decoding reads the whole cache every token, so this halves the attention's memory traffic
    # (the cost: one loop body to compile per chunk).
    carry = (_start_buffer(prompt, num_steps), cache)
    for start, stop in chunks:
        if len(chunks) > 1:
            carry = (carry[0], tokens_to_logits.resize_cache(carry[1], stop))
        carry = jax.lax.fori_loop(start, stop, step, carry)
    buffer = carry[0]
    return buffer[: buffer.shape[0] // 2] if use_cfg else buffer


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=_STATIC)
def _sample_full(sequence_to_logits, state, prompt, rng, temperature, top_p, cfg_scale, *,
                 num_steps, top_k, use_top_p, use_cfg):
    prompt_len = prompt.shape[1]
    choose = functools.partial(_next_token, top_k=top_k, use_top_p=use_top_p, use_cfg=use_cfg)

    def step(t, buffer):
        # The whole fixed-size buffer goes through the model; causality makes the unwritten tail
        # irrelevant to the logits at position t.
        logits = jax.lax.dynamic_index_in_dim(sequence_to_logits(buffer, state), t, axis=1, keepdims=False)
        return _write(buffer, t, choose(logits, jax.random.fold_in(rng, t + 1), temperature, top_p, cfg_scale),
                      prompt_len)

    buffer = jax.lax.fori_loop(prompt_len - 1, prompt_len + num_steps - 1, step, _start_buffer(prompt, num_steps))
    return buffer[: buffer.shape[0] // 2] if use_cfg else buffer


def _check(prompt, num_steps, temperature, top_k, top_p, cfg_scale):
    """Validates sampling settings on the host; returns the static switches (use_top_p, use_cfg)."""
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"prompt must be an int array (R, P) with P >= 1, got {prompt.dtype} {prompt.shape}")
    if num_steps < 0:
        raise UserError(f"num_steps must be >= 0, got {num_steps}")
    if float(temperature) < 0:
        raise UserError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k < 0:
        raise UserError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if not 0 < float(top_p) <= 1:
        raise UserError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if cfg_scale is not None and prompt.shape[0] % 2:
        raise ValueError(f"classifier-free guidance needs conditional + unconditional rows, got {prompt.shape[0]} rows")
    return float(top_p) < 1.0, cfg_scale is not None


def sample(tokens_to_logits: Callable, init_cache: Any, prompt, rng, *, num_steps: int, temperature=1.0,
           top_k: int = 0, top_p=1.0, cfg_scale=None, chunk_len: int = 0):
    """Draws num_steps tokens after a prompt, one at a time through the prior's KV cache.

    tokens_to_logits: (tokens int32 (R, 1), cache) -> (logits float (R, V), new cache); a hashable
      callable (a module-level function or a frozen dataclass): it is a static argument of the jit.
    init_cache: the empty cache for R rows and at least P + num_steps positions.
    prompt: int32 (R, P), P >= 1; kept unchanged at the front of the output. With cfg_scale, R = 2B:
      B conditional rows, then the B matching unconditional rows.
    rng: a PRNG key; the same key gives the same tokens.
    temperature: 0 = greedy (argmax). top_k: 0 = off. top_p: 1 = off. cfg_scale: None = no guidance.
    chunk_len: when tokens_to_logits has a `resize_cache(cache, length) -> cache` method, the tokens
      are decoded in chunks of chunk_len, each with a cache cut to the positions written by the
      chunk's end (the same tokens, less memory traffic; one more loop body to compile per chunk).
      0 = one chunk over the whole cache (GPUs and TPUs: a decode step there is bound by kernel launches,
      not by reading the cache); the CPU backend uses `backends.decode_chunk_len` (32).
    Returns int32 (R, P + num_steps), or (B, P + num_steps) (the conditional rows) with guidance.
    """
    prompt = jnp.asarray(prompt)
    use_top_p, use_cfg = _check(prompt, num_steps, temperature, top_k, top_p, cfg_scale)
    prompt = prompt.astype(jnp.int32)
    if chunk_len < 0:
        raise UserError(f"chunk_len must be >= 0 (0 = one chunk), got {chunk_len}")
    if not hasattr(tokens_to_logits, "resize_cache"):
        chunk_len = 0                                     # a cache it cannot resize: one chunk
    return _sample_cached(tokens_to_logits, init_cache, prompt, rng, jnp.float32(temperature), jnp.float32(top_p),
                          jnp.float32(1.0 if cfg_scale is None else cfg_scale), num_steps=num_steps,
                          top_k=top_k, use_top_p=use_top_p, use_cfg=use_cfg,
                          chunks=_chunks(prompt.shape[1] + num_steps - 1, chunk_len))


def sample_no_cache(sequence_to_logits: Callable, state: Any, prompt, rng, *, num_steps: int, temperature=1.0,
                    top_k: int = 0, top_p=1.0, cfg_scale=None):
    """`sample` without a KV cache: each step runs the prior on the whole (R, P + num_steps) buffer.

    sequence_to_logits: (tokens int32 (R, L), state) -> logits float (R, L, V), causal; hashable.
    state: whatever it needs (e.g. the parameters). Other arguments and the result are as in `sample`;
    with the same rng both samplers draw the same tokens (up to float round-off in the logits).
    """
    prompt = jnp.asarray(prompt)
    use_top_p, use_cfg = _check(prompt, num_steps, temperature, top_k, top_p, cfg_scale)
    prompt = prompt.astype(jnp.int32)
    return _sample_full(sequence_to_logits, state, prompt, rng, jnp.float32(temperature), jnp.float32(top_p),
                        jnp.float32(1.0 if cfg_scale is None else cfg_scale), num_steps=num_steps,
                        top_k=top_k, use_top_p=use_top_p, use_cfg=use_cfg)


@dataclasses.dataclass(frozen=True)
class GPT2TokensToLogits:
    """tokens_to_logits for a GPT2LMHead; its cache is (params, kv cache), so the parameters are jit
    arguments (not constants baked into the compiled loop) and new parameters reuse the compile."""
    model: GPT2LMHead

    def __call__(self, tokens, cache):
        params, kv = cache
        logits, mutated = self.model.apply({"params": params, "cache": kv}, tokens, decode=True, mutable=["cache"])
        return logits[:, -1], (params, mutated["cache"])                     # (R, V)

    def resize_cache(self, cache, length: int):
        params, kv = cache
        return params, resize_cache(kv, length)


@dataclasses.dataclass(frozen=True)
class GPT2SequenceToLogits:
    """sequence_to_logits for a GPT2LMHead; its state is the parameters."""
    model: GPT2LMHead

    def __call__(self, tokens, params):
        return self.model.apply({"params": params}, tokens)                 # (R, L, V)


class GPT2Sampler(NamedTuple):
    tokens_to_logits: GPT2TokensToLogits
    init_cache: Any             # (params, zeroed kv cache) for `sample`
    sequence_to_logits: GPT2SequenceToLogits
    params: Any                 # the state for `sample_no_cache`


def make_gpt2_sampler(model: GPT2LMHead, params, *, batch_size: int, max_len: int) -> GPT2Sampler:
    """Callbacks and states that let `sample` / `sample_no_cache` drive our GPT-2.

    batch_size: rows R (2B with guidance); max_len: P + num_steps, at most model.n_positions.
    """
    if max_len > model.n_positions:
        raise UserError(f"sampling {max_len} positions needs a GPT-2 with n_positions >= {max_len}, "
                        f"this one has {model.n_positions}")
    return GPT2Sampler(GPT2TokensToLogits(model), (params, init_cache(model, batch_size, max_len)),
                       GPT2SequenceToLogits(model), params)
