"""GPT-2 (Radford et al., 2019) in Flax linen, with Hugging Face GPT-2's parameter names.

What lives here:
- `GPT2LMHead`: the language model (token + learned position embeddings, pre-LayerNorm blocks, final
  LayerNorm, lm head tied to `wte`), built from explicit fields;
- `GPT2LMHeadModel(config, dtype)`: builds a `GPT2LMHead` from a `transformers.GPT2Config`;
- `init_cache(model, batch_size, max_len)`: the zeroed KV cache for decode mode.

Plain Flax: the layer constructors are fields with flax's layers as defaults (`dense` = nn.Dense,
`layer_norm` = nn.LayerNorm, `dropout_layer` = nn.Dropout, `attention_fn` = `nn.attention.causal_attention`,
and `block` = `Block`); `vqgan_jax.backends` may pass others with the same signatures and parameter names.

Parameter tree (HF's `transformer.h.0.attn.c_attn.weight` is our `h_0/attn/c_attn/kernel`):
  wte/embedding (V, C), wpe/embedding (P, C),
  h_i/{ln_1, attn/{c_attn, c_proj}, ln_2, mlp/{c_fc, c_proj}}, ln_f.
HF's Conv1D keeps its weight as (in, out), the layout of a Flax Dense kernel, so no tensor is transposed.

Decode mode (flax lm1b style): `init` with `decode=True` on a (B, max_len) dummy input creates the
'cache' collection: per layer `cached_key` / `cached_value` float (B, n_head, max_len, head_dim), plus
one `cache_index` int32 () at the top. Each later call with `decode=True` and `mutable=['cache']` writes
its (B, L) tokens' keys and values at `cache_index` and advances it by L; shapes never change, so a
jitted decode step compiles once.
"""
import functools
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.nn.attention import cached_attention, causal_attention

ModuleDef = Any

# GPT-2's 'gelu_new' and PyTorch's gelu(approximate='tanh') are the same tanh formula.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


def _layer_norm(module, name: str) -> nn.Module:
    """GPT-2's LayerNorm: 'scale' ones, 'bias' zeros; the variance in two passes as PyTorch computes it."""
    return module.layer_norm(epsilon=module.layer_norm_epsilon, dtype=module.dtype, use_fast_variance=False,
                             name=name)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's fused `c_attn` and output `c_proj`."""
    n_head: int
    init_std: float = 0.02
    proj_std: float = 0.02            # GPT-2 scales c_proj's init by 1/sqrt(2 * n_layer)
    attn_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32
    dense: ModuleDef = nn.Dense
    dropout_layer: ModuleDef = nn.Dropout
    attention_fn: Callable = causal_attention

    @nn.compact
    def __call__(self, x, *, train: bool, decode: bool, cache_index=None):
        """x: (B, T, C) -> (B, T, C). In decode mode cache_index (int32 ()) is where x's tokens go."""
        b, t, c = x.shape
        head_dim = c // self.n_head
        qkv = self.dense(3 * c, dtype=self.dtype, kernel_init=nn.initializers.normal(self.init_std),
                         name="c_attn")(x)                              # (B, T, 3C)
        q, k, v = (a.reshape(b, t, self.n_head, head_dim) for a in jnp.split(qkv, 3, axis=-1))

        if decode:
            # The cache is kept as (B, H, max_len, D), the layout the attention dots read directly:
            # a (B, max_len, H, D) cache made XLA transpose all of it, twice per layer and token.
            shape = (b, self.n_head, t, head_dim)
            initialized = self.has_variable("cache", "cached_key")
            cached_key = self.variable("cache", "cached_key", jnp.zeros, shape, k.dtype)
            cached_value = self.variable("cache", "cached_value", jnp.zeros, shape, v.dtype)
            if initialized:  # on the `init` call the cache is only created; attention stays plain causal
                start = (0, 0, cache_index, 0)
                kc = jax.lax.dynamic_update_slice(
                    cached_key.value, jnp.swapaxes(k, 1, 2).astype(cached_key.value.dtype), start)
                vc = jax.lax.dynamic_update_slice(
                    cached_value.value, jnp.swapaxes(v, 1, 2).astype(cached_value.value.dtype), start)
                cached_key.value, cached_value.value = kc, vc                 # (B, H, max_len, D)
        if decode and initialized:
            y = cached_attention(q, kc, vc, cache_index)
        else:
            dropout = None
            if train and self.attn_pdrop > 0:
                drop = self.dropout_layer(self.attn_pdrop, name="attn_dropout")
                dropout = functools.partial(drop, deterministic=False)
            y = self.attention_fn(q, k, v, dropout=dropout)
        y = y.reshape(b, t, c)                                              # heads merged back
        y = self.dense(c, dtype=self.dtype, kernel_init=nn.initializers.normal(self.proj_std), name="c_proj")(y)
        return self.dropout_layer(self.resid_pdrop)(y, deterministic=not train)


class MLP(nn.Module):
    """c_fc (C -> n_inner), tanh GELU, c_proj (n_inner -> C), residual dropout."""
    n_inner: int
    init_std: float = 0.02
    proj_std: float = 0.02
    resid_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32
    dense: ModuleDef = nn.Dense
    dropout_layer: ModuleDef = nn.Dropout

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (B, T, C) -> (B, T, C)."""
        h = self.dense(self.n_inner, dtype=self.dtype, kernel_init=nn.initializers.normal(self.init_std),
                       name="c_fc")(x)
        h = jax.nn.gelu(h, approximate=True)
        h = self.dense(x.shape[-1], dtype=self.dtype, kernel_init=nn.initializers.normal(self.proj_std),
                       name="c_proj")(h)
        return self.dropout_layer(self.resid_pdrop)(h, deterministic=not train)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""
    n_head: int
    n_inner: int
    layer_norm_epsilon: float = 1e-5
    init_std: float = 0.02
    proj_std: float = 0.02
    attn_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32
    dense: ModuleDef = nn.Dense
    layer_norm: ModuleDef = nn.LayerNorm
    dropout_layer: ModuleDef = nn.Dropout
    attention_fn: Callable = causal_attention

    @nn.compact
    def __call__(self, x, *, train: bool, decode: bool, cache_index=None):
        """x: (B, T, C) -> (B, T, C)."""
        attn = CausalSelfAttention(self.n_head, self.init_std, self.proj_std, self.attn_pdrop, self.resid_pdrop,
                                   self.dtype, self.dense, self.dropout_layer, self.attention_fn, name="attn")
        x = x + attn(_layer_norm(self, "ln_1")(x), train=train, decode=decode, cache_index=cache_index)
        mlp = MLP(self.n_inner, self.init_std, self.proj_std, self.resid_pdrop, self.dtype, self.dense,
                  self.dropout_layer, name="mlp")
        return x + mlp(_layer_norm(self, "ln_2")(x), train=train)


class GPT2LMHead(nn.Module):
    """GPT-2 language model with the lm head tied to the token embedding.

    Fields mirror GPT2Config (n_inner None means 4 * n_embd). `dtype` is the compute dtype;
    parameters stay float32 and logits are returned in float32.
    """
    vocab_size: int
    n_positions: int
    n_embd: int
    n_layer: int
    n_head: int
    n_inner: int | None = None
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32
    dense: ModuleDef = nn.Dense
    layer_norm: ModuleDef = nn.LayerNorm
    dropout_layer: ModuleDef = nn.Dropout
    attention_fn: Callable = causal_attention
    block: ModuleDef = Block

    @nn.compact
    def __call__(self, input_ids, *, train: bool = False, decode: bool = False, positions=None,
                 return_hidden: bool = False):
        """input_ids: int32 (B, T) -> logits float32 (B, T, vocab_size).

        positions: optional int32 (B, T) or (T,) position ids; by default 0..T-1, or in decode mode
        cache_index..cache_index+T-1. Dropout (rng stream 'dropout') is active only when train=True.
        return_hidden: return the final LayerNorm's output (B, T, n_embd) in `dtype` instead of the
        logits (for a head of one's own, e.g. the logits of a subset of the vocabulary).
        """
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")
        _, t = input_ids.shape
        if t > self.n_positions:
            raise ValueError(f"sequence length {t} exceeds n_positions {self.n_positions}")
        init = nn.initializers.normal(self.initializer_range)
        wte = nn.Embed(self.vocab_size, self.n_embd, dtype=self.dtype, embedding_init=init, name="wte")
        wpe = nn.Embed(self.n_positions, self.n_embd, dtype=self.dtype, embedding_init=init, name="wpe")

        cache_index = None
        if decode:
            initialized = self.has_variable("cache", "cache_index")
            index = self.variable("cache", "cache_index", lambda: jnp.zeros((), jnp.int32))
            if initialized:
                cache_index = index.value
                index.value = cache_index + t
        if positions is None:
            positions = jnp.arange(t, dtype=jnp.int32) if cache_index is None else cache_index + jnp.arange(t)

        x = wte(input_ids) + wpe(positions)                                 # (B, T, C)
        x = self.dropout_layer(self.embd_pdrop)(x, deterministic=not train)
        proj_std = self.initializer_range / math.sqrt(2 * self.n_layer)
        for i in range(self.n_layer):
            x = self.block(self.n_head, self.n_inner or 4 * self.n_embd, self.layer_norm_epsilon,
                           self.initializer_range, proj_std, self.attn_pdrop, self.resid_pdrop, self.dtype,
                           self.dense, self.layer_norm, self.dropout_layer, self.attention_fn, name=f"h_{i}")(
                x, train=train, decode=decode, cache_index=cache_index)
        x = _layer_norm(self, "ln_f")(x)
        if return_hidden:
            return x                                                        # (B, T, C)
        return wte.attend(x).astype(jnp.float32)                          # (B, T, V)


def check_config(config) -> None:
    """Raises UserError when a GPT2Config asks for something this GPT-2 does not implement."""
    if getattr(config, "model_type", None) != "gpt2":
        raise UserError(f"expected a GPT-2 config (model_type 'gpt2'), got {config.model_type!r}")
    if config.activation_function not in _TANH_GELUS:
        raise UserError(f"GPT-2 activation_function {config.activation_function!r} is not supported; "
                        f"use one of {_TANH_GELUS}")
    unsupported = {"scale_attn_weights": (getattr(config, "scale_attn_weights", True), True),
                   "scale_attn_by_inverse_layer_idx": (getattr(config, "scale_attn_by_inverse_layer_idx", False), False),
                   "add_cross_attention": (getattr(config, "add_cross_attention", False), False),
                   "tie_word_embeddings": (getattr(config, "tie_word_embeddings", True), True)}
    for key, (value, wanted) in unsupported.items():
        if bool(value) != wanted:
            raise UserError(f"GPT-2 config {key}={value} is not supported (only {wanted})")
    if config.n_embd % config.n_head:
        raise UserError(f"GPT-2 config n_embd {config.n_embd} is not a multiple of n_head {config.n_head}")


def GPT2LMHeadModel(config, dtype=jnp.float32, **layers) -> GPT2LMHead:  # noqa: N802
    """Builds a `GPT2LMHead` from a `transformers.GPT2Config` (checked with `check_config`).

    layers: optional layer constructors (dense, layer_norm, dropout_layer, attention_fn, block), e.g. a
    backend's (`vqgan_jax.backends.gpt2_layers`); flax's own layers by default.
    """
    check_config(config)
    return GPT2LMHead(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.n_inner,
        layer_norm_epsilon=config.layer_norm_epsilon, initializer_range=config.initializer_range,
        embd_pdrop=config.embd_pdrop, resid_pdrop=config.resid_pdrop, attn_pdrop=config.attn_pdrop,
        dtype=dtype, **layers)


def init_cache(model: GPT2LMHead, batch_size: int, max_len: int):
    """The zeroed 'cache' collection for decoding up to max_len tokens of batch_size rows.

    Only shapes are traced (no parameters are initialised), once per (model, batch_size, max_len);
    cache_index starts at 0.
    """
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), _cache_shapes(model, batch_size, max_len))


@functools.lru_cache(maxsize=16)
def _cache_shapes(model: GPT2LMHead, batch_size: int, max_len: int):
    dummy = jnp.zeros((batch_size, max_len), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), dummy, decode=True))["cache"]


def resize_cache(cache, length: int):
    """The 'cache' collection with every cached key/value cut or zero-padded to `length` positions.

    cache: as from `init_cache` (per layer float (B, H, S, D)); positions below min(S, length) keep
    their values, cache_index is unchanged. Decoding attends over the whole cache (unwritten positions
    masked), so a cache just long enough for the next tokens does less work per token.
    """
    def fit(x):
        if x.ndim != 4:
            return x
        s = x.shape[2]
        if length <= s:
            return x[:, :, :length]
        return jnp.pad(x, ((0, 0), (0, 0), (0, length - s), (0, 0)))
    return jax.tree.map(fit, cache)
