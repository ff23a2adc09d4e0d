"""fastops: the CPU halving sum, and the dense layer, bias add and GroupNorm with written-out gradients,
equal the plain formulas (values and gradients), in isolation and inside GPT-2's training gradient."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax import fastops
from vqgan_jax.gpt2 import Dense, GPT2LMHead


def test_tree_sum_of_a_hand_made_array():
    x = jnp.arange(2 * 3 * 5, dtype=jnp.float32).reshape(2, 3, 5)
    np.testing.assert_array_equal(fastops.tree_sum(x, 0), np.arange(15).reshape(3, 5) * 2 + 15)
    np.testing.assert_array_equal(fastops.tree_sum(x, (0, 1, 2)), sum(range(30)))
    # rows of 5 (odd: the last element is set aside and added at the end)
    np.testing.assert_array_equal(fastops.tree_sum(x, -1), np.arange(30).reshape(2, 3, 5).sum(-1))


@pytest.mark.parametrize("shape,axis", [
    ((6, 10, 7), 0), ((6, 10, 7), (0, 1)), ((6, 10, 7), (1, 2)), ((6, 10, 7), (0, 2)), ((6, 10, 7), -1),
    ((3, 5, 4, 9), (0, 1, 2)), ((33, 17), 0), ((1, 4), 0), ((257, 3), 0)])
def test_tree_sum_equals_jnp_sum_and_its_gradient_is_the_broadcast(shape, axis):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    got = jax.jit(lambda x: fastops.tree_sum(x, axis))(x)
    want = jnp.sum(x, axis)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    w = jnp.asarray(rng.standard_normal(want.shape).astype(np.float32))
    g = jax.grad(lambda x: jnp.sum(fastops.tree_sum(x, axis) * w))(x)
    np.testing.assert_allclose(g, jax.grad(lambda x: jnp.sum(jnp.sum(x, axis) * w))(x), rtol=0, atol=0)


def test_tree_sum_of_bfloat16_accumulates_in_float32():
    # 4096 values near 1: the float32 sum rounds to the nearest bfloat16 (spacing 32 at 4096). Halving
    # adds in bfloat16 itself would be off by 24.6 here, more than the half spacing.
    x = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, 4096).astype(np.float32)).astype(jnp.bfloat16)
    got = fastops.tree_sum(x, 0)
    assert got.dtype == jnp.bfloat16
    exact = np.asarray(x, np.float64).sum()
    assert float(got) == float(jnp.asarray(exact, jnp.float32).astype(jnp.bfloat16))
    assert abs(float(got) - exact) <= 16


def _dense_inputs(rng, shape=(3, 7, 5), out=6):
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((shape[-1], out)).astype(np.float32))
    b = jnp.asarray(rng.standard_normal((out,)).astype(np.float32))
    return x, w, b


def test_dense_equals_the_plain_formula_and_its_gradients():
    rng = np.random.default_rng(1)
    x, w, b = _dense_inputs(rng)
    r = jnp.asarray(rng.standard_normal((3, 7, 6)).astype(np.float32))
    plain = lambda x, w, b: jnp.einsum("btc,cd->btd", x, w, precision="highest") + b  # noqa: E731
    np.testing.assert_allclose(fastops.dense(x, w, b), plain(x, w, b), rtol=1e-5, atol=1e-5)
    got = jax.grad(lambda *a: jnp.sum(fastops.dense(*a) * r), argnums=(0, 1, 2))(x, w, b)
    want = jax.grad(lambda *a: jnp.sum(plain(*a) * r), argnums=(0, 1, 2))(x, w, b)
    for g, h in zip(got, want):
        assert g.shape == h.shape
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)
    # hand check of the bias gradient: the sum of r over all rows
    np.testing.assert_allclose(got[2], np.asarray(r).sum((0, 1)), rtol=1e-5, atol=1e-5)


def test_dense_module_has_flax_dense_params_init_and_numbers():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 5, 8)).astype(np.float32))
    init = nn.initializers.normal(0.02)
    ours, theirs = Dense(12, kernel_init=init), nn.Dense(12, kernel_init=init)
    p_ours = ours.init(jax.random.PRNGKey(3), x)
    p_theirs = theirs.init(jax.random.PRNGKey(3), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_array_equal(a, b)
    p = {"params": {"kernel": p_ours["params"]["kernel"], "bias": jnp.linspace(-1, 1, 12)}}
    np.testing.assert_allclose(ours.apply(p, x), theirs.apply(p, x), rtol=1e-6, atol=1e-6)


def test_gpt2_training_gradient_equals_the_plain_autodiff_gradient(monkeypatch):
    """The whole model's loss gradient with the CPU rules (dense, tree_sum, LayerNorm, materialize_grad) equals the
    one the other backends compute (plain formulas under autodiff)."""
    model = GPT2LMHead(vocab_size=37, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    ids = jax.random.randint(jax.random.PRNGKey(0), (3, 16), 0, 37)
    params = model.init(jax.random.PRNGKey(1), ids)["params"]

    def loss(p):
        logits = model.apply({"params": p}, ids[:, :-1])
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1))

    fast = jax.jit(jax.value_and_grad(loss))(params)
    monkeypatch.setattr(fastops, "_on_cpu", lambda: False)
    plain = jax.jit(jax.value_and_grad(loss))(params)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _plain(monkeypatch, fn, *args):
    """fn(*args) and its value under the other backends' path (plain formulas under autodiff)."""
    fast = fn(*args)
    monkeypatch.setattr(fastops, "_on_cpu", lambda: False)
    plain = fn(*args)
    monkeypatch.undo()
    return fast, plain


def test_group_norm_and_its_gradient_equal_the_plain_formula(monkeypatch):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 50, 12)).astype(np.float32) * 2 + 1)
    scale = jnp.asarray(rng.standard_normal(12).astype(np.float32))
    bias = jnp.asarray(rng.standard_normal(12).astype(np.float32))
    r = jnp.asarray(rng.standard_normal((3, 50, 12)).astype(np.float32))

    def value_and_grads(x, scale, bias):
        f = lambda *a: jnp.sum(fastops.group_norm(*a, 4, 1e-6) * r)  # noqa: E731
        return fastops.group_norm(x, scale, bias, 4, 1e-6), jax.grad(f, argnums=(0, 1, 2))(x, scale, bias)

    fast, plain = _plain(monkeypatch, value_and_grads, x, scale, bias)   # eager: each call traces anew
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(fast[1], plain[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # hand check: each group of (50 positions x 3 channels) is normalised to mean 0, variance 1
    y = (np.asarray(fast[0]) - np.asarray(bias)) / np.asarray(scale)
    groups = y.reshape(3, 50, 4, 3).transpose(0, 2, 1, 3).reshape(3, 4, 150)
    np.testing.assert_allclose(groups.mean(-1), 0, atol=1e-4)
    np.testing.assert_allclose(groups.var(-1), 1, atol=1e-3)


def test_materialize_is_the_exact_identity():
    """GroupNorm's per-channel coefficients pass through a dot with the identity: it must change nothing."""
    rng = np.random.default_rng(9)
    a = rng.standard_normal((5, 70)) * 10.0 ** rng.integers(-20, 20, (5, 70))
    a = jnp.asarray(a.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(fastops._materialize(a)), np.asarray(a))


def test_add_bias_gradient_is_the_sum_over_all_leading_axes():
    g = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32))
    y, b = jnp.zeros((2, 3, 4, 5)), jnp.arange(5.0)
    np.testing.assert_array_equal(fastops.add_bias(y, b), jnp.broadcast_to(b, y.shape))
    dy, db = jax.grad(lambda y, b: jnp.sum(fastops.add_bias(y, b) * g), argnums=(0, 1))(y, b)
    np.testing.assert_array_equal(dy, g)
    np.testing.assert_allclose(db, np.asarray(g).sum((0, 1, 2)), rtol=1e-5, atol=1e-6)


def test_scale_shift_gradients_are_the_sums_over_all_leading_axes():
    rng = np.random.default_rng(12)
    x, g = (jnp.asarray(rng.standard_normal((2, 3, 5)).astype(np.float32)) for _ in range(2))
    scale, bias = jnp.linspace(0.5, 2.0, 5), jnp.arange(5.0)
    np.testing.assert_allclose(fastops.scale_shift(x, scale, bias), np.asarray(x) * np.asarray(scale) + np.arange(5.0),
                               rtol=1e-6)
    dx, ds, db = jax.grad(lambda *a: jnp.sum(fastops.scale_shift(*a) * g), argnums=(0, 1, 2))(x, scale, bias)
    np.testing.assert_allclose(dx, np.asarray(g) * np.asarray(scale), rtol=1e-6)
    np.testing.assert_allclose(ds, (np.asarray(g) * np.asarray(x)).sum((0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, np.asarray(g).sum((0, 1)), rtol=1e-5, atol=1e-6)


def test_gpt2_layer_norm_has_flax_layer_norm_params_numbers_and_gradients():
    from vqgan_jax.gpt2 import LayerNorm
    rng = np.random.default_rng(13)
    x = jnp.asarray(rng.standard_normal((2, 7, 48)).astype(np.float32) * 3 + 1)
    r = jnp.asarray(rng.standard_normal((2, 7, 48)).astype(np.float32))
    ours, theirs = LayerNorm(1e-5), nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)
    p = ours.init(jax.random.PRNGKey(0), x)
    assert jax.tree.map(jnp.shape, p) == jax.tree.map(jnp.shape, theirs.init(jax.random.PRNGKey(0), x))
    p = {"params": {"scale": jnp.linspace(0.5, 1.5, 48), "bias": jnp.linspace(-1, 1, 48)}}
    np.testing.assert_allclose(ours.apply(p, x), theirs.apply(p, x), rtol=1e-5, atol=1e-5)
    g_ours = jax.grad(lambda p, x: jnp.sum(ours.apply(p, x) * r), argnums=(0, 1))(p, x)
    g_theirs = jax.grad(lambda p, x: jnp.sum(theirs.apply(p, x) * r), argnums=(0, 1))(p, x)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_r1_penalty_differentiates_through_the_written_out_gradients(monkeypatch):
    """R1 takes the gradient of a gradient: reverse mode over the custom rules of `add_bias` and
    `group_norm` in the discriminator (norm 'group') must give the plain formulas' numbers."""
    from vqgan_jax import losses
    from vqgan_jax.discriminator import PatchDiscriminator
    d = PatchDiscriminator(ndf=8, n_layers=2)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
    params = d.init(jax.random.PRNGKey(1), x)["params"]

    def r1_and_grad(p):  # a new function per call, so the second call traces (and jits) anew
        return jax.jit(jax.value_and_grad(lambda p: losses.r1_penalty(lambda xr: d.apply({"params": p}, xr), x)))(p)

    fast, plain = _plain(monkeypatch, r1_and_grad, params)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    assert float(fast[0]) > 0
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.abs(b).max()) + 1e-8)
