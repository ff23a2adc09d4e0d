"""The XLA:CPU backend's blocked causal attention equals softmax attention (values, gradients, dropout)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax import backends
from vqgan_jax.backends.xla_cpu.attention import blocked_causal_attention
from vqgan_jax.train import parallel


def _softmax_attention(q, k, v):
    """Plain causal softmax attention in float64 numpy: q, k, v (B, T, H, D) -> (B, T, H, D)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    s = np.where(np.tril(np.ones((q.shape[1], k.shape[1]), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v)

@pytest.mark.parametrize("t, block", [(150, 64), (64, 64), (7, 64), (40, 16)])
def test_blocked_attention_equals_softmax_attention_and_its_gradient(t, block):
    rng = np.random.default_rng(t)
    q, k, v, g = (jnp.asarray(2 * rng.standard_normal((2, t, 3, 8)), jnp.float32) for _ in range(4))
    # Jitted, all in one program: op by op, the blocked gradient dispatches (and compiles) hundreds of
    # small programs.
    ours = lambda q, k, v: blocked_causal_attention(q, k, v, dropout=None, block=block)  # noqa: E731
    # Gradients against XLA's reference attention (explicitly the 'xla' implementation).
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")  # noqa: E731
    out, *grads = jax.jit(lambda q, k, v, g: (ours(q, k, v), *(jax.vjp(f, q, k, v)[1](g) for f in (ref, ours))))(
        q, k, v, g)
    np.testing.assert_allclose(np.asarray(out), _softmax_attention(q, k, v), atol=1e-5, rtol=1e-5)
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=5e-5, rtol=1e-5)

def test_blocked_attention_dropout_drops_weights():
    from flax import linen as nn
    # All-equal scores (q = 0): row 3's weights are 1/4 on keys 0..3. With v = one-hot key ids, output
    # row 3 lists those weights, each dropped (0) or kept and rescaled by 1 / (1 - 0.5): 0.5.
    k = jnp.asarray(np.random.default_rng(0).standard_normal((16, 100, 2, 4)), jnp.float32)
    q = jnp.asarray(np.zeros((16, 100, 2, 4), np.float32))
    v = jnp.asarray(np.broadcast_to(np.eye(100, 4, dtype=np.float32)[None, :, None, :], (16, 100, 2, 4)))
    # One program (the same masks): op by op, every block's dropout compiles its own RNG kernel. Compiled
    # as an init is (`tests/jit.py`): XLA:CPU spends seconds optimising the RNG code of the ~10 blocks.
    drop = lambda q, key: nn.Dropout(0.5).apply(  # noqa: E731
        {}, q, rngs={"dropout": key},
        method=lambda m, x: blocked_causal_attention(x, k, v, dropout=lambda w: m(w, deterministic=False), block=32))
    out = parallel.run_once_jitted(drop, q, jax.random.key(1),
                                   compiler_options=backends.init_compiler_options("xla_cpu"))
    row = np.asarray(out)[:, 3]                                  # (16, 2, 4)
    assert set(np.round(row.ravel(), 6)) == {0.0, 0.5}
    assert 0.3 < (row == 0).mean() < 0.7
    plain = jax.jit(lambda q, k, v: blocked_causal_attention(q, k, v, dropout=None, block=32))(q, k, v)
    np.testing.assert_allclose(np.asarray(plain)[:, 3], 0.25, atol=1e-7)
