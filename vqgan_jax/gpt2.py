"""GPT-2 (Radford et al., 2019) in Flax linen, with Hugging Face GPT-2's parameter names.

What lives here:
- `GPT2LMHead`: the language model (token + learned position embeddings, pre-LayerNorm blocks, final
  LayerNorm, lm head tied to `wte`), built from explicit fields;
- `GPT2LMHeadModel(config, dtype)`: builds a `GPT2LMHead` from a `transformers.GPT2Config`;
- `init_cache(model, batch_size, max_len)`: the zeroed KV cache for decode mode.

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

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.dropout import Dropout
from vqgan_jax.errors import UserError
from vqgan_jax.fastops import dense, materialize_grad, scale_shift, tree_sum

# GPT-2's 'gelu_new' and PyTorch's gelu(approximate='tanh') are the same tanh formula.
_TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh")


# Query block length of the CPU attention (see `_attend_blocked`).
CPU_ATTENTION_BLOCK = 64


def _attend(q, k, v, *, dropout: nn.Module | None, impl):
    """Causal scaled dot-product attention over a whole sequence (training and full forward passes).

    q, k, v: (B, T, H, D). Returns (B, T, H, D) in q's dtype. impl: None = `_attend_blocked` on CPU and
    `jax.nn.dot_product_attention` (XLA's choice) elsewhere; 'xla' / 'cudnn' = that function with this
    implementation; 'blocked' = `_attend_blocked` everywhere. `jax.nn.dot_product_attention` has no
    dropout on the attention weights, so training with attn_pdrop > 0 takes an explicit path there.
    """
    if impl == "blocked" or (impl is None and jax.default_backend() == "cpu"):
        return _attend_blocked(q, k, v, dropout=dropout, block=CPU_ATTENTION_BLOCK)
    if dropout is None:
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation=impl)
    scores = jnp.einsum("bthd,bshd->bhts", q, k, preferred_element_type=jnp.float32)
    scores = scores / math.sqrt(q.shape[-1])                          # (B, H, T, T) float32
    mask = jnp.tril(jnp.ones((q.shape[1], k.shape[1]), bool))[None, None]
    scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
    weights = dropout(jax.nn.softmax(scores, axis=-1), deterministic=False)
    return jnp.einsum("bhts,bshd->bthd", weights.astype(v.dtype), v)


def _attend_blocked(q, k, v, *, dropout: nn.Module | None, block: int):
    """Causal attention by query blocks, with the softmax normalised after the value product.

    q, k, v: (B, T, H, D) -> (B, T, H, D) in q's dtype. Query block [a, b) (block rows; the last may be
    shorter) attends to keys [0, b) only, so the masked upper triangle beyond the diagonal blocks is
    never computed: only 62.5% of the (T, T) scores are, at T = 256 with block 64. Per block,
    e = exp(s - max s) and the output is (e @ v) / sum(e): dividing the (b - a, D) output instead of
    the (b - a, b) weights saves a full pass over the scores forward and one backward (the max is a
    constant shift, so its gradient is stopped). Same values as softmax attention to float32 rounding;
    1.6-1.9x faster forward + backward than `jax.nn.dot_product_attention` on XLA:CPU for the flowers64
    prior's layers. Dropout, when given, drops attention weights as the explicit path does
    (dropout(e) / sum(e) = dropout(e / sum(e))).
    """
    t, d = q.shape[1], q.shape[-1]
    qh, kh, vh = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))                  # (B, H, T, D)
    qh = qh * jnp.asarray(1 / math.sqrt(d), qh.dtype)
    outs = []
    for a in range(0, t, block):
        b = min(a + block, t)
        s = jnp.einsum("bhtd,bhsd->bhts", qh[:, :, a:b], kh[:, :, :b],
                       preferred_element_type=jnp.float32)                    # (B, H, b - a, b)
        causal = jnp.arange(b)[None, :] <= jnp.arange(a, b)[:, None]
        s = jnp.where(causal, s, jnp.finfo(jnp.float32).min)
        e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
        total = jnp.sum(e, axis=-1, keepdims=True)                            # (B, H, b - a, 1)
        if dropout is not None:
            e = dropout(e, deterministic=False)
        out = jnp.einsum("bhts,bhsd->bhtd", e.astype(vh.dtype), vh[:, :, :b],
                         preferred_element_type=jnp.float32)
        outs.append((out / total).astype(q.dtype))
    return jnp.swapaxes(jnp.concatenate(outs, axis=2), 1, 2)


def _attend_cache(q, k_cache, v_cache, cache_index):
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


class Dense(nn.Module):
    """flax.linen.Dense's parameters ('kernel' (C_in, features), 'bias' zeros), init and numbers, through
    `fastops.dense` (whose CPU gradient rule makes the prior's CPU step 1.16x faster).

    x (..., C_in) -> (..., features) in `dtype`; parameters float32.
    """
    features: int
    kernel_init: nn.initializers.Initializer
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        return dense(x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's fused `c_attn` and output `c_proj`."""
    n_head: int
    init_std: float = 0.02
    proj_std: float = 0.02            # GPT-2 scales c_proj's init by 1/sqrt(2 * n_layer)
    attn_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32
    attention_impl: str | None = None  # None (auto), 'xla', 'cudnn' or 'blocked': see `_attend`

    @nn.compact
    def __call__(self, x, *, train: bool, decode: bool, cache_index=None):
        """x: (B, T, C) -> (B, T, C). In decode mode cache_index (int32 ()) is where x's tokens go."""
        b, t, c = x.shape
        head_dim = c // self.n_head
        qkv = Dense(3 * c, dtype=self.dtype, kernel_init=nn.initializers.normal(self.init_std),
                    name="c_attn")(x)                                   # (B, T, 3C)
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
            y = _attend_cache(q, kc, vc, cache_index)
        else:
            use_dropout = train and self.attn_pdrop > 0
            dropout = Dropout(self.attn_pdrop, name="attn_dropout") if use_dropout else None
            y = _attend(q, k, v, dropout=dropout, impl=self.attention_impl)
        y = y.reshape(b, t, c)                                              # heads merged back
        y = Dense(c, dtype=self.dtype, kernel_init=nn.initializers.normal(self.proj_std),
                  name="c_proj")(y)
        return Dropout(self.resid_pdrop)(y, deterministic=not train)


class MLP(nn.Module):
    """c_fc (C -> n_inner), tanh GELU, c_proj (n_inner -> C), residual dropout."""
    n_inner: int
    init_std: float = 0.02
    proj_std: float = 0.02
    resid_pdrop: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: (B, T, C) -> (B, T, C)."""
        h = Dense(self.n_inner, dtype=self.dtype, kernel_init=nn.initializers.normal(self.init_std),
                  name="c_fc")(x)
        h = jax.nn.gelu(h, approximate=True)
        h = Dense(x.shape[-1], dtype=self.dtype, kernel_init=nn.initializers.normal(self.proj_std),
                  name="c_proj")(h)
        return Dropout(self.resid_pdrop)(h, deterministic=not train)


class LayerNorm(nn.Module):
    """flax.linen.LayerNorm(use_fast_variance=False)'s parameters ('scale' ones, 'bias' zeros, float32)
    and numbers (to float32 rounding), written for XLA:CPU: the row means are `fastops.tree_sum`s and
    the affine step is `fastops.scale_shift` (whose scale and bias gradients are `tree_sum`s too).
    The flowers64 prior's CPU step: 1.66 s against 1.73 s with flax's LayerNorm (interleaved,
    `bench/ab.py --stage prior --variants ours,flax_layernorm`).

    x (..., C) -> (..., C) in `dtype`; statistics in float32, the variance in two passes as PyTorch's
    LayerNorm computes it (parity with HF within 1e-5).
    """
    epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x = x.astype(jnp.float32)
        mean = lambda a: (tree_sum(a, -1) / c)[..., None]  # noqa: E731  (halving adds on CPU)
        xc = x - mean(x)
        xn = xc * jax.lax.rsqrt(mean(xc * xc) + self.epsilon)
        return scale_shift(xn, scale, bias).astype(self.dtype)


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
    attention_impl: str | None = None

    @nn.compact
    def __call__(self, x, *, train: bool, decode: bool, cache_index=None):
        """x: (B, T, C) -> (B, T, C)."""
        ln = lambda name: LayerNorm(self.layer_norm_epsilon, self.dtype, name=name)  # noqa: E731
        x = x + CausalSelfAttention(self.n_head, self.init_std, self.proj_std, self.attn_pdrop,
                                    self.resid_pdrop, self.dtype, self.attention_impl, name="attn")(
            ln("ln_1")(x), train=train, decode=decode, cache_index=cache_index)
        x = x + MLP(self.n_inner, self.init_std, self.proj_std, self.resid_pdrop, self.dtype, name="mlp")(
            ln("ln_2")(x), train=train)
        return materialize_grad(x)  # see fastops.materialize_grad: 1.7x faster steps on XLA:CPU


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
    attention_impl: str | None = None

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
        x = Dropout(self.embd_pdrop)(x, deterministic=not train)
        proj_std = self.initializer_range / math.sqrt(2 * self.n_layer)
        for i in range(self.n_layer):
            x = Block(self.n_head, self.n_inner or 4 * self.n_embd, self.layer_norm_epsilon,
                      self.initializer_range, proj_std, self.attn_pdrop, self.resid_pdrop, self.dtype,
                      self.attention_impl, name=f"h_{i}")(
                x, train=train, decode=decode, cache_index=cache_index)
        x = LayerNorm(self.layer_norm_epsilon, self.dtype, name="ln_f")(x)
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


def GPT2LMHeadModel(config, dtype=jnp.float32, attention_impl: str | None = None) -> GPT2LMHead:  # noqa: N802
    """Builds a `GPT2LMHead` from a `transformers.GPT2Config` (checked with `check_config`)."""
    check_config(config)
    return GPT2LMHead(
        vocab_size=config.vocab_size, n_positions=config.n_positions, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=config.n_inner,
        layer_norm_epsilon=config.layer_norm_epsilon, initializer_range=config.initializer_range,
        embd_pdrop=config.embd_pdrop, resid_pdrop=config.resid_pdrop, attn_pdrop=config.attn_pdrop,
        dtype=dtype, attention_impl=attention_impl)


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
