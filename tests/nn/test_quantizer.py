"""VectorQuantizer and restart_dead_codes: choices, gradients, statistics and EMA updates against hand
computations, and a sharded EMA update equal to the unsharded one."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tests import jit
from vqgan_jax.nn.quantizer import VectorQuantizer, restart_dead_codes

# Four 2-D codes on the axes: the nearest code of a point is the axis it leans towards.
CODES = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]], np.float32)


def grad_vars(codebook, usage=None):
    k = codebook.shape[0]
    return {"params": {"codebook": jnp.asarray(codebook)},
            "vq_stats": {"usage": np.ones(k, np.float32) if usage is None else jnp.asarray(usage)}}


def ema_vars(codebook, usage=None):
    k = codebook.shape[0]
    cb = jnp.asarray(codebook)
    return {"vq_stats": {"codebook": cb, "cluster_size": np.ones(k, np.float32), "embed_sum": cb,
                         "usage": np.ones(k, np.float32) if usage is None else jnp.asarray(usage)}}


def z_of(points):
    """(N, D) points -> (1, 1, N, D), the (B, h, w, D) layout the quantizer takes."""
    return jnp.asarray(np.asarray(points, np.float32)[None, None])


@functools.partial(jax.jit, static_argnums=0, static_argnames=("train", "mutable", "method"))
def apply(vq, variables, *args, **kwargs):
    """vq.apply under one jit, compiled once per module, options and shapes (eager, each op compiles).
    mutable: a tuple (static)."""
    return vq.apply(variables, *args, **kwargs)


def test_init_variables_and_codebook_range():
    vq = VectorQuantizer(num_codes=8, code_dim=3)
    v = jit.init(vq, jax.random.key(0), np.zeros((1, 2, 2, 3), np.float32), train=True)
    assert set(v) == {"params", "vq_stats"}
    cb = v["params"]["codebook"]
    assert cb.shape == (8, 3) and cb.dtype == jnp.float32
    cb = np.asarray(cb)
    assert float(np.max(np.abs(cb))) <= 1 / 8 and float(np.std(cb)) > 0.01  # uniform(-1/K, 1/K)
    np.testing.assert_array_equal(v["vq_stats"]["usage"], np.ones(8))  # init never updates stats

    ema = VectorQuantizer(num_codes=8, code_dim=3, ema=True)
    ve = jit.init(ema, jax.random.key(0), np.zeros((1, 2, 2, 3), np.float32), train=True)
    assert set(ve) == {"vq_stats"}
    assert set(ve["vq_stats"]) == {"codebook", "cluster_size", "embed_sum", "usage"}
    np.testing.assert_array_equal(ve["vq_stats"]["embed_sum"], ve["vq_stats"]["codebook"])


def test_nearest_code_is_chosen():
    vq = VectorQuantizer(num_codes=4, code_dim=2)
    pts = [[0.9, 0.2], [0.1, 2.0], [-3.0, 1.0], [0.2, -0.5], [0.6, 0.5]]
    z_q, aux = apply(vq, grad_vars(CODES), z_of(pts), train=False)
    np.testing.assert_array_equal(aux["indices"], [[[0, 1, 2, 3, 0]]])
    assert aux["indices"].dtype == jnp.int32
    np.testing.assert_allclose(z_q[0, 0], CODES[[0, 1, 2, 3, 0]], atol=1e-6)
    np.testing.assert_allclose(aux["z_e"], z_of(pts))
    ids = jnp.array([[3, 1], [0, 2]])
    np.testing.assert_array_equal(apply(vq, grad_vars(CODES), ids, method=VectorQuantizer.embed),
                                  CODES[[[3, 1], [0, 2]]])


def test_straight_through_gradient_is_identity():
    vq = VectorQuantizer(num_codes=4, code_dim=2)
    z = z_of([[0.9, 0.2], [0.1, 2.0], [-3.0, 1.0]])
    w = np.arange(6.0, dtype=np.float32).reshape(z.shape) - 2.5
    g = jax.jit(jax.grad(lambda z: jnp.sum(vq.apply(grad_vars(CODES), z, train=False)[0] * w)))(z)  # one compile
    np.testing.assert_allclose(g, w, atol=1e-6)


def test_beta_is_on_the_commitment_term():
    beta = 0.25
    vq = VectorQuantizer(num_codes=4, code_dim=2, beta=beta)
    pts = np.array([[0.9, 0.2], [0.1, 2.0], [0.6, 0.1]], np.float32)  # codes 0, 1, 0
    e = CODES[[0, 1, 0]]
    n = pts.size  # losses are means over every element

    def loss(z, codebook):
        return vq.apply(grad_vars(codebook), z, train=True)[1]["loss"]

    g_z, g_cb = jax.jit(jax.grad(loss, argnums=(0, 1)))(z_of(pts), jnp.asarray(CODES))  # one compile
    np.testing.assert_allclose(g_z[0, 0], 2 * beta * (pts - e) / n, atol=1e-6)
    want_cb = np.zeros_like(CODES)
    np.add.at(want_cb, [0, 1, 0], 2 * (e - pts) / n)
    np.testing.assert_allclose(g_cb, want_cb, atol=1e-6)

    aux = apply(vq, grad_vars(CODES), z_of(pts), train=True)[1]
    mse = np.mean((pts - e) ** 2)
    np.testing.assert_allclose([aux["codebook_loss"], aux["commit_loss"], aux["loss"]],
                               [mse, mse, (1 + beta) * mse], rtol=1e-6)


def test_ema_loss_has_no_codebook_term():
    vq = VectorQuantizer(num_codes=4, code_dim=2, beta=0.5, ema=True)
    pts = np.array([[0.9, 0.2], [0.1, 2.0]], np.float32)
    aux = apply(vq, ema_vars(CODES), z_of(pts), train=False)[1]
    mse = np.mean((pts - CODES[[0, 1]]) ** 2)
    np.testing.assert_allclose([aux["codebook_loss"], aux["loss"]], [mse, 0.5 * mse], rtol=1e-6)


@pytest.mark.parametrize("ids, usage, perplexity", [
    ([0, 0, 1, 1], 0.5, 2.0),
    ([0, 0, 0, 1], 0.5, float(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))),
    ([3, 3, 3, 3], 0.25, 1.0),
    ([0, 1, 2, 3], 1.0, 4.0),
])
def test_usage_and_perplexity(ids, usage, perplexity):
    vq = VectorQuantizer(num_codes=4, code_dim=2)
    aux = apply(vq, grad_vars(CODES), z_of(CODES[ids] * 0.9), train=False)[1]
    np.testing.assert_array_equal(aux["indices"][0, 0], ids)
    np.testing.assert_allclose([aux["usage"], aux["perplexity"]], [usage, perplexity], rtol=1e-6)


def test_l2_normalize_picks_by_cosine():
    codes = np.array([[3.0, 0.3], [0.5, 0.5]], np.float32)
    z = z_of([[1.0, 0.05]])  # Euclidean nearest: code 1 (0.45 vs 4.06); smallest angle: code 0
    plain = VectorQuantizer(num_codes=2, code_dim=2)
    assert int(apply(plain, grad_vars(codes), z, train=False)[1]["indices"][0, 0, 0]) == 1
    cos = VectorQuantizer(num_codes=2, code_dim=2, l2_normalize=True)
    z_q, aux = apply(cos, grad_vars(codes), z, train=False)
    assert int(aux["indices"][0, 0, 0]) == 0
    np.testing.assert_allclose(z_q[0, 0, 0], codes[0] / np.linalg.norm(codes[0]), rtol=1e-6)
    np.testing.assert_allclose(aux["z_e"][0, 0, 0], np.array([1.0, 0.05]) / np.hypot(1.0, 0.05), rtol=1e-6)
    np.testing.assert_allclose(apply(cos, grad_vars(codes), jnp.array([1]), method=VectorQuantizer.embed),
                               [[0.5 ** 0.5, 0.5 ** 0.5]], rtol=1e-6)


def test_ema_update_matches_hand_computation():
    d, eps, k = 0.9, 1e-5, 4
    vq = VectorQuantizer(num_codes=k, code_dim=2, ema=True, ema_decay=d, eps=eps, usage_decay=0.5)
    pts = np.array([[0.9, 0.2], [0.7, -0.2], [0.1, 2.0]], np.float32)  # codes 0, 0, 1
    _, state = apply(vq, ema_vars(CODES), z_of(pts), train=True, mutable=("vq_stats",))
    s = state["vq_stats"]
    counts = np.array([2.0, 1.0, 0.0, 0.0])
    sums = np.zeros_like(CODES)
    np.add.at(sums, [0, 0, 1], pts)
    cluster = d * 1.0 + (1 - d) * counts
    embed = d * CODES + (1 - d) * sums
    n = cluster.sum()
    want = embed / ((cluster + eps) / (n + k * eps) * n)[:, None]
    np.testing.assert_allclose(s["cluster_size"], cluster, rtol=1e-6)
    np.testing.assert_allclose(s["embed_sum"], embed, rtol=1e-6)
    np.testing.assert_allclose(s["codebook"], want, rtol=1e-5)
    np.testing.assert_allclose(s["usage"], 0.5 * 1.0 + 0.5 * counts, rtol=1e-6)
    # Up to the Laplace smoothing, code 0 is the decayed count-weighted mean (0.9 e0 + 0.1 sum) / (0.9 + 0.1*2).
    np.testing.assert_allclose(s["codebook"][0], (0.9 * CODES[0] + 0.1 * sums[0]) / 1.1, rtol=1e-4)
    np.testing.assert_allclose(s["codebook"][2:], CODES[2:], atol=1e-4)  # unused codes stay put
    # Without a mutable 'vq_stats', or in eval mode, nothing is written.
    z_q, aux = apply(vq, ema_vars(CODES), z_of(pts), train=True)
    np.testing.assert_array_equal(aux["indices"][0, 0], [0, 0, 1])
    _, state = apply(vq, ema_vars(CODES), z_of(pts), train=False, mutable=("vq_stats",))
    np.testing.assert_array_equal(state["vq_stats"]["codebook"], CODES)


def test_usage_ema_of_gradient_codebook():
    vq = VectorQuantizer(num_codes=4, code_dim=2, usage_decay=0.9)
    _, state = apply(vq, grad_vars(CODES), z_of(CODES[[2, 2, 1]]), train=True, mutable=("vq_stats",))
    np.testing.assert_allclose(state["vq_stats"]["usage"], 0.9 + 0.1 * np.array([0, 1, 2, 0]), rtol=1e-6)


def test_restart_dead_codes_replaces_exactly_the_dead_ones():
    codebook = jnp.asarray(np.arange(10.0, 18.0, dtype=np.float32).reshape(4, 2))
    usage = jnp.array([0.5, 0.001, 2.0, 0.0])
    z_flat = jnp.asarray(np.random.default_rng(0).normal(size=(6, 2)).astype(np.float32))
    restart = jax.jit(restart_dead_codes)  # one compile for both calls (eager, each op compiles)
    new_cb, new_usage, num = restart(codebook, usage, z_flat, jax.random.key(3), 0.1)
    assert int(num) == 2
    np.testing.assert_array_equal(np.asarray(new_cb)[[0, 2]], np.asarray(codebook)[[0, 2]])
    np.testing.assert_array_equal(new_usage, [0.5, 1.0, 2.0, 1.0])
    rows = [int(np.flatnonzero((np.asarray(z_flat) == np.asarray(new_cb[i])).all(1))[0]) for i in (1, 3)]
    assert rows[0] != rows[1]  # drawn without replacement
    # Deterministic in the key.
    again = restart(codebook, usage, z_flat, jax.random.key(3), 0.1)[0]
    np.testing.assert_array_equal(again, new_cb)


def test_ema_module_restarts_dead_codes():
    vq = VectorQuantizer(num_codes=4, code_dim=2, ema=True, restart_threshold=0.3, usage_decay=0.5)
    pts = np.array([[0.9, 0.2], [0.7, -0.2], [0.1, 2.0], [0.3, 0.4]], np.float32)
    # usage before: code 2 at 0.1 stays under 0.3 after the decay; code 3 at 0.7 -> 0.35 survives.
    v = ema_vars(CODES, usage=[1.0, 1.0, 0.1, 0.7])
    (_, aux), state = apply(vq, v, z_of(pts), train=True, mutable=("vq_stats",), rngs={"vq": jax.random.key(0)})
    s = state["vq_stats"]
    assert int(aux["num_restarted"]) == 1
    assert any(np.array_equal(s["codebook"][2], p) for p in pts)
    assert float(s["usage"][2]) == 1.0 and float(s["cluster_size"][2]) == 1.0
    np.testing.assert_array_equal(s["embed_sum"][2], s["codebook"][2])
    np.testing.assert_allclose(s["usage"][3], 0.35, rtol=1e-6)
    np.testing.assert_allclose(s["codebook"][3], CODES[3], atol=1e-4)  # alive and unused: unchanged
    # The gradient codebook is left to the train step: the module restarts nothing.
    vg = VectorQuantizer(num_codes=4, code_dim=2, restart_threshold=0.3, usage_decay=0.5)
    (_, aux), _ = apply(vg, grad_vars(CODES, [1.0, 1.0, 0.1, 0.7]), z_of(pts), train=True, mutable=("vq_stats",),
                        rngs={"vq": jax.random.key(0)})
    assert int(aux["num_restarted"]) == 0


def test_sharded_ema_update_equals_unsharded():
    devices = jax.devices()
    assert len(devices) == 8
    vq = VectorQuantizer(num_codes=16, code_dim=4, ema=True, restart_threshold=0.995, usage_decay=0.99)
    z = np.random.default_rng(1).standard_normal((8, 3, 3, 4)).astype(np.float32)  # numpy: eager draws compile slowly
    v = jit.init(vq, jax.random.key(0), z, train=False)

    def step(v, z, rng):
        (z_q, aux), state = vq.apply(v, z, train=True, mutable=["vq_stats"], rngs={"vq": rng})
        return z_q, {k: a for k, a in aux.items() if k != "z_e"}, state

    rng = jax.random.key(7)
    want = jax.jit(step)(v, z, rng)
    mesh = Mesh(np.array(devices), ("data",))
    z_sharded = jax.device_put(z, NamedSharding(mesh, P("data")))
    got = jax.jit(step)(v, z_sharded, rng)
    assert got[0].sharding.spec == P("data")  # really ran sharded
    assert int(want[1]["num_restarted"]) > 0  # codes the batch missed fall under 0.995 and restart
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
