"""The XLA:CPU backend's sums, dense layer, bias add and GroupNorm with written-out gradients equal the
plain formulas and flax's layers (values and gradients), in isolation and inside whole models'
training gradients (GPT-2, and R1's gradient of a gradient through the discriminator)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax import backends
from vqgan_jax.backends.xla_cpu import dense as dense_lib, norm, sums
from vqgan_jax.backends.xla_cpu.dense import Dense
from vqgan_jax.backends.xla_cpu.norm import GroupNorm
from vqgan_jax.models.gpt2 import GPT2LMHead
from tests import jit


def test_tree_sum_of_a_hand_made_array():
    x = jnp.asarray(np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5))
    # one jit: op by op, every halving step compiles on its own
    by_0, by_all, by_last = jax.jit(lambda x: (sums.tree_sum(x, 0), sums.tree_sum(x, (0, 1, 2)),
                                               sums.tree_sum(x, -1)))(x)
    np.testing.assert_array_equal(by_0, np.arange(15).reshape(3, 5) * 2 + 15)
    np.testing.assert_array_equal(by_all, sum(range(30)))
    # rows of 5 (odd: the last element is set aside and added at the end)
    np.testing.assert_array_equal(by_last, np.arange(30).reshape(2, 3, 5).sum(-1))


@pytest.mark.parametrize("shape,axis", [
    ((6, 10, 7), 0), ((6, 10, 7), (0, 1)), ((6, 10, 7), (1, 2)), ((6, 10, 7), (0, 2)), ((6, 10, 7), -1),
    ((3, 5, 4, 9), (0, 1, 2)), ((33, 17), 0), ((1, 4), 0), ((257, 3), 0)])
def test_tree_sum_equals_jnp_sum_and_its_gradient_is_the_broadcast(shape, axis):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    w = jnp.asarray(rng.standard_normal(np.zeros(shape).sum(axis).shape).astype(np.float32))

    @jax.jit  # values and both gradients in one program (op by op, each step compiles on its own)
    def sums_and_grads(x, w):
        return (sums.tree_sum(x, axis), jnp.sum(x, axis), jax.grad(lambda x: jnp.sum(sums.tree_sum(x, axis) * w))(x),
                jax.grad(lambda x: jnp.sum(jnp.sum(x, axis) * w))(x))

    got, want, g, g_plain = sums_and_grads(x, w)
    assert got.shape == want.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, g_plain, rtol=0, atol=0)


def test_tree_sum_of_bfloat16_accumulates_in_float32():
    # 4096 values near 1: the float32 sum rounds to the nearest bfloat16 (spacing 32 at 4096). Halving
    # adds in bfloat16 itself would be off by 24.6 here, more than the half spacing.
    # Jitted (op by op, each of the 12 halving steps compiles on its own): a bfloat16 halving sum under jit
    # still rounds every add to bfloat16 (4064 here), so the check still tells the two apart.
    x = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, 4096).astype(np.float32).astype(jnp.bfloat16))
    got = jax.jit(lambda x: sums.tree_sum(x, 0))(x)
    assert got.dtype == jnp.bfloat16
    exact = np.asarray(x, np.float64).sum()
    assert float(got) == float(np.asarray(exact, np.float32).astype(jnp.bfloat16))
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

    @jax.jit  # every value and gradient in one program (op by op, each op compiles on its own)
    def values_and_grads(x, w, b, r):
        grad = lambda f: jax.grad(lambda *a: jnp.sum(f(*a) * r), argnums=(0, 1, 2))(x, w, b)  # noqa: E731
        return (dense_lib.dense(x, w, b), plain(x, w, b), grad(dense_lib.dense), grad(plain),
                grad(lambda *a: dense_lib.dense(*a, True)))

    y, y_plain, got, want, sharded = values_and_grads(x, w, b, r)
    np.testing.assert_allclose(y, y_plain, rtol=1e-5, atol=1e-5)
    for g, h in zip(got, want):
        assert g.shape == h.shape
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)
    # hand check of the bias gradient: the sum of r over all rows
    np.testing.assert_allclose(got[2], np.asarray(r).sum((0, 1)), rtol=1e-5, atol=1e-5)
    # the batch-sharded order (`sums.bias_grad`) gives the same gradients
    for g, h in zip(sharded, want):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)


def test_dense_module_has_flax_dense_params_init_and_numbers():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((2, 5, 8)).astype(np.float32))
    init = nn.initializers.normal(0.02)
    ours, theirs = Dense(12, kernel_init=init), nn.Dense(12, kernel_init=init)
    p_ours = jit.init(ours, jax.random.PRNGKey(3), x)
    p_theirs = jit.init(theirs, jax.random.PRNGKey(3), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_array_equal(a, b)
    p = {"params": {"kernel": p_ours["params"]["kernel"], "bias": np.linspace(-1, 1, 12, dtype=np.float32)}}
    np.testing.assert_allclose(jit.run(ours, p, x), jit.run(theirs, p, x), rtol=1e-6, atol=1e-6)


def test_gpt2_training_gradient_equals_the_plain_models():
    """The whole model's loss gradient with every XLA:CPU rule (dense, residual barrier, blocked attention)
    equals plain flax's, from the same parameter tree."""
    kw = dict(vocab_size=37, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    plain_model = GPT2LMHead(**kw)
    cpu_model = GPT2LMHead(**kw, **backends.gpt2_layers("xla_cpu"))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 37, (3, 16)), jnp.int32)  # no eager RNG kernel to compile
    params = jit.init(plain_model, jax.random.PRNGKey(1), ids)["params"]
    cpu_params = jit.init(cpu_model, jax.random.PRNGKey(1), ids)["params"]
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(cpu_params)):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(params) == jax.tree.structure(cpu_params)

    def loss(model):
        def f(p):
            logits = model.apply({"params": p}, ids[:, :-1])
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), ids[:, 1:, None], -1))
        return jax.jit(jax.value_and_grad(f))(params)

    fast, plain = loss(cpu_model), loss(plain_model)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _plain_group_norm(x, scale, bias, groups, eps):
    """The formula under autodiff: (x - mean) / sqrt(var + eps) per group, then the affine map."""
    b, n, c = x.shape
    g = x.reshape(b, n, groups, c // groups)
    mean, var = g.mean((1, 3), keepdims=True), g.var((1, 3), keepdims=True)
    return ((g - mean) * jax.lax.rsqrt(var + eps)).reshape(b, n, c) * scale + bias


def test_group_norm_and_its_gradient_equal_the_plain_formula():
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.standard_normal((3, 50, 12)).astype(np.float32) * 2 + 1)
    scale = jnp.asarray(rng.standard_normal(12).astype(np.float32))
    bias = jnp.asarray(rng.standard_normal(12).astype(np.float32))
    r = jnp.asarray(rng.standard_normal((3, 50, 12)).astype(np.float32))

    def value_and_grads(fn):
        f = lambda *a: jnp.sum(fn(*a, 4, 1e-6) * r)  # noqa: E731
        # one program (op by op, each op of the value and its gradient compiles on its own)
        return jax.jit(lambda *a: (fn(*a, 4, 1e-6), jax.grad(f, argnums=(0, 1, 2))(*a)))(x, scale, bias)

    fast, plain = value_and_grads(norm.group_norm), value_and_grads(_plain_group_norm)
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
    np.testing.assert_array_equal(np.asarray(sums.materialize(a)), np.asarray(a))


def test_add_bias_gradient_is_the_sum_over_all_leading_axes():
    g = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 4, 5)).astype(np.float32))
    y, b = jnp.asarray(np.zeros((2, 3, 4, 5), np.float32)), jnp.asarray(np.arange(5, dtype=np.float32))

    @jax.jit  # the value and both gradients in one program (op by op, each op compiles on its own)
    def value_and_grads(y, b, g):
        grad = lambda sharded: jax.grad(lambda y, b: jnp.sum(sums.add_bias(y, b, sharded) * g),  # noqa: E731
                                        argnums=(0, 1))(y, b)
        return sums.add_bias(y, b), grad(False), grad(True)

    out, (dy, db), (_, db_sharded) = value_and_grads(y, b, g)
    np.testing.assert_array_equal(out, np.broadcast_to(np.asarray(b), y.shape))
    np.testing.assert_array_equal(dy, g)
    np.testing.assert_allclose(db, np.asarray(g).sum((0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db_sharded, db, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(8, 4, 4, 5), (8, 6, 3), (8, 5), (16, 3, 7, 2)])
def test_bias_grad_in_both_orders_on_a_batch_split_over_eight_devices(shape):
    """One device's order (one halving chain over every row) and the batch-first order for a batch split
    over devices both give jnp.sum's result; the batch-first one also on the 8-device mesh it is for."""
    from vqgan_jax.train import parallel
    g = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    want = g.sum(tuple(range(g.ndim - 1)))
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    sharded = parallel.global_batch({"g": g}, mesh)["g"]
    # both orders in one program, on one device and on the mesh (op by op, each op compiles on its own)
    both = jax.jit(lambda g: (sums.bias_grad(g, False), sums.bias_grad(g, True)))
    for got in (*both(jnp.asarray(g)), *both(sharded)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_group_norm_module_has_flax_params_and_numbers():
    # numpy's normal: an eager jax.random.normal compiles its RNG kernel
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 4, 4, 16)).astype(np.float32) * 3 + 1)
    p = {"params": {"scale": np.linspace(0.5, 2, 16, dtype=np.float32),
                    "bias": np.linspace(-1, 1, 16, dtype=np.float32)}}
    theirs = nn.GroupNorm(num_groups=4, epsilon=1e-6)
    assert jax.tree.map(jnp.shape, jit.init(GroupNorm(4), jax.random.key(1), x)) == \
        jax.tree.map(jnp.shape, jit.init(theirs, jax.random.key(1), x))
    np.testing.assert_allclose(jit.run(GroupNorm(4), p, x), jit.run(theirs, p, x), atol=1e-5)
    assert jit.run(GroupNorm(4, dtype=jnp.bfloat16), p, x).dtype == jnp.bfloat16


def test_r1_penalty_differentiates_through_the_written_out_gradients():
    """R1 takes the gradient of a gradient: reverse mode over the backend's custom rules (bias sums,
    GroupNorm) in the discriminator (norm 'group') must give plain flax's numbers."""
    from vqgan_jax.losses import gan as losses
    from vqgan_jax.models.patchgan import PatchDiscriminator
    layers = backends.vqgan_layers("xla_cpu")
    plain_d = PatchDiscriminator(ndf=8, n_layers=2)
    cpu_d = PatchDiscriminator(ndf=8, n_layers=2, conv=layers["conv"], norm_layer=layers["norm"])
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16, 16, 3)).astype(np.float32))  # no eager RNG
    params = jit.init(plain_d, jax.random.PRNGKey(1), x)["params"]

    def r1_and_grad(d):
        return jax.jit(jax.value_and_grad(lambda p: losses.r1_penalty(lambda xr: d.apply({"params": p}, xr), x)))(
            params)

    fast, plain = r1_and_grad(cpu_d), r1_and_grad(plain_d)
    np.testing.assert_allclose(fast[0], plain[0], rtol=1e-5)
    assert float(fast[0]) > 0
    for a, b in zip(jax.tree.leaves(fast[1]), jax.tree.leaves(plain[1])):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(np.abs(np.asarray(b)).max()) + 1e-8)
