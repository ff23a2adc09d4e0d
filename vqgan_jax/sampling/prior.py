"""Token grids from the GPT-2 prior, and images from token grids with the VQGAN.

Used by `sample.py` (through `sampling.draw`) and by the prior's training-time sample grids. The sampler
itself (`sampling.autoregressive.sample`) knows nothing about VQGANs: here a callback restricts the GPT-2's
logits to the codebook ids, so special tokens (start / class) can never be drawn inside a grid.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.errors import UserError
from vqgan_jax.models.gpt2 import GPT2LMHead, init_cache, resize_cache
from vqgan_jax.sampling import autoregressive


@dataclasses.dataclass(frozen=True)
class CodeLogits:
    """tokens_to_logits for `sampling.sample`: our GPT-2 in decode mode, logits of the codes only.

    cache: (params, kv cache, head) with head float32 (n_embd, num_codes) = the tied embedding's code
    rows, transposed once before the loop (`code_head`): XLA:CPU reads the (V, C) embedding
    transposed in every token's matmul at a third of the speed. Parameters are jit arguments, so new
    weights reuse the compile.
    """
    model: GPT2LMHead
    num_codes: int

    def __call__(self, tokens, cache):
        params, kv, head = cache
        hidden, mutated = self.model.apply({"params": params, "cache": kv}, tokens, decode=True,
                                           return_hidden=True, mutable=["cache"])
        logits = jnp.dot(hidden[:, -1], head.astype(hidden.dtype)).astype(jnp.float32)
        return logits, (params, mutated["cache"], head)                     # (R, K)

    def resize_cache(self, cache, length: int):
        params, kv, head = cache
        return params, resize_cache(kv, length), head


def code_head(params, num_codes: int):
    """float32 (n_embd, num_codes): the lm head's code columns, for `CodeLogits`."""
    return jnp.asarray(params["wte"]["embedding"][:num_codes]).T.copy()


@dataclasses.dataclass(frozen=True)
class CodeSequenceLogits:
    """sequence_to_logits for `sampling.sample_no_cache` (whole-prefix recomputation), codes only."""
    model: GPT2LMHead
    num_codes: int

    def __call__(self, tokens, params):
        return self.model.apply({"params": params}, tokens)[..., : self.num_codes]  # (R, L, K)


def make_prompt(tokens: PriorTokens, n: int, *, labels=None, cfg_scale: float | None = None,
                first_codes=None) -> tuple[np.ndarray, float | None]:
    """Start tokens for n grids: int32 (n, P) or (2n, P) with guidance; returns (prompt, cfg or None).

    labels: int (n,) class ids or None (unconditional: the null token). cfg_scale: guidance weight;
    used only with labels on a class-conditional prior (1.0 means none). first_codes: optional int
    (n,) codebook ids given as the first grid token (the Flowers102 VQGAN + GPT-2 study's recipe: a random first token).
    """
    if labels is not None:
        labels = np.asarray(labels, np.int64)
        if tokens.num_classes == 0:
            raise UserError("this prior is unconditional: drop --label (class labels need a labelled dataset)")
        bad = labels[(labels < 0) | (labels >= tokens.num_classes)]
        if bad.size:
            raise UserError(f"--label {int(bad[0])} is outside the prior's classes 0..{tokens.num_classes - 1}")
        first = tokens.num_codes + 1 + labels
    else:
        first = np.full((n,), tokens.null_token, np.int64)
    cols = [first]
    if first_codes is not None:
        first_codes = np.asarray(first_codes, np.int64)
        if ((first_codes < 0) | (first_codes >= tokens.num_codes)).any():
            raise UserError(f"first tokens must be codebook ids in 0..{tokens.num_codes - 1}")
        cols.append(first_codes)
    prompt = np.stack(cols, axis=1).astype(np.int32)
    use_cfg = labels is not None and cfg_scale is not None and float(cfg_scale) != 1.0
    if not use_cfg:
        return prompt, None
    uncond = prompt.copy()
    uncond[:, 0] = tokens.null_token
    return np.concatenate([prompt, uncond]), float(cfg_scale)


def sample_grids(model: GPT2LMHead, params, tokens: PriorTokens, grid, n: int, rng, *, labels=None,
                 temperature=1.0, top_k: int = 0, top_p=1.0, cfg_scale=None, first_codes=None,
                 use_cache: bool = True, chunk_len: int = 0) -> np.ndarray:
    """n token grids int32 (n, h, w) from the prior (one jitted KV-cache loop; see
    `autoregressive.sample`, also for chunk_len)."""
    h, w = int(grid[0]), int(grid[1])
    prompt, cfg = make_prompt(tokens, n, labels=labels, cfg_scale=cfg_scale, first_codes=first_codes)
    num_steps = h * w - (prompt.shape[1] - 1)
    top_k = min(int(top_k), tokens.num_codes)
    if use_cache:
        cache = (params, init_cache(model, prompt.shape[0], prompt.shape[1] + num_steps),
                 code_head(params, tokens.num_codes))
        out = autoregressive.sample(CodeLogits(model, tokens.num_codes), cache, prompt, rng, num_steps=num_steps,
                              temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg,
                              chunk_len=chunk_len)
    else:
        out = autoregressive.sample_no_cache(CodeSequenceLogits(model, tokens.num_codes), params, prompt, rng,
                                       num_steps=num_steps, temperature=temperature, top_k=top_k, top_p=top_p,
                                       cfg_scale=cfg)
    return np.asarray(out)[:, 1:].reshape(-1, h, w)


def decode_grids(vq, ids) -> np.ndarray:
    """Token grids int (n, h, w) -> images float32 (n, H, W, 3) in [-1, 1] (clipped), with a loaded VQGAN
    (`train.loading.load_vqgan`)."""
    x = vq.run("decode_ids", jnp.asarray(ids, jnp.int32))
    return np.clip(np.asarray(x, np.float32), -1.0, 1.0)
