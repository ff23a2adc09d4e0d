"""The DCGAN step: its losses and BatchNorm statistics against a hand computation, D and G move D(x) and
D(G(z)) the right way, same seed same result, and 8 devices (global batch statistics) equal 1 device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dcgan import mnist
from vqgan_jax.train import parallel
from vqgan_jax.trainers.dcgan_step import DCGANSetup


def config(**model):
    c = mnist.get_config("tiny")
    c.unlock()
    c.data.num_classes = 10
    for k, v in model.items():
        setattr(c.model, k, v)
    return c


def batch(n=8, seed=0):
    # Each device's slice has its own brightness, so per-device batch statistics would differ from the
    # global ones (the 8-devices test would catch a per-device BatchNorm).
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(0, 0.3, (n, 16, 16, 1)) + np.linspace(-0.8, 0.8, n)[:, None, None, None], -1, 1)
    return {"image": x.astype(np.float32), "label": (np.arange(n) % 10).astype(np.int32)}


def run(setup, steps, seed=0):
    state = setup.init_state(0)
    gb = parallel.global_batch(batch(), setup.mesh)
    out = []
    for s in range(steps):
        state, m = setup.step(state, gb, jax.random.fold_in(jax.random.PRNGKey(seed), s))
        out.append({k: float(v) for k, v in jax.device_get(m).items()})
    return jax.device_get(state), out


@pytest.fixture(scope="module")
def setup1():
    return DCGANSetup(config(), parallel.make_mesh(jax.devices()[:1]))


@pytest.fixture(scope="module")
def setup8():
    assert jax.device_count() == 8
    return DCGANSetup(config(), parallel.make_mesh())


def softplus(v):
    return np.logaddexp(0.0, v)


def test_losses_and_statistics_by_hand(setup1):
    """Recompute the first step's forward passes outside the step and the losses in numpy."""
    setup = setup1
    state = setup.init_state(0)
    b, rng = batch(), jax.random.PRNGKey(7)
    z = jax.random.normal(rng, (8, setup.z_dim))
    g_vars = {"params": state.g_params, "batch_stats": state.g_stats}
    fake, g_new = setup.gen.apply(g_vars, z, train=True, mutable=["batch_stats"])
    d_vars = {"params": state.d_params, "batch_stats": state.d_stats}
    real, d_new = setup.disc.apply(d_vars, b["image"], train=True, mutable=["batch_stats"])
    fake_logits, _ = setup.disc.apply({**d_vars, **d_new}, fake, train=True, mutable=["batch_stats"])
    real, fake_logits = np.asarray(real, np.float64), np.asarray(fake_logits, np.float64)
    want_d = 0.5 * (softplus(-real).mean() + softplus(fake_logits).mean())
    new, m = setup.step(state, parallel.global_batch(b, setup.mesh), rng)
    m = jax.device_get(m)
    np.testing.assert_allclose(m["d/loss"], want_d, rtol=1e-5)
    np.testing.assert_allclose(m["d/real"], (1 / (1 + np.exp(-real))).mean(), rtol=1e-5)
    np.testing.assert_allclose(m["d/fake"], (1 / (1 + np.exp(-fake_logits))).mean(), rtol=1e-5)
    # G's running statistics come from its one training-mode pass on this z.
    jax.tree.map(lambda a, w: np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-7),
                 jax.device_get(new.g_stats), jax.device_get(g_new["batch_stats"]))
    # G's loss is non-saturating, on the updated D's logits: softplus(-logits) = -log D(G(z)).
    p = m["d/fake_after"]
    assert m["g/loss"] >= -np.log(p) - 1e-5  # Jensen: mean(-log D) >= -log mean(D)


def test_hinge_loss_option():
    c = config()
    c.loss.kind = "hinge"
    setup = DCGANSetup(c, parallel.make_mesh(jax.devices()[:1]))
    state = setup.init_state(0)
    b, rng = batch(), jax.random.PRNGKey(7)
    z = jax.random.normal(rng, (8, setup.z_dim))
    fake, _ = setup.gen.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, train=True,
                              mutable=["batch_stats"])
    d_vars = {"params": state.d_params, "batch_stats": state.d_stats}
    real, d_new = setup.disc.apply(d_vars, b["image"], train=True, mutable=["batch_stats"])
    fake_logits, _ = setup.disc.apply({**d_vars, **d_new}, fake, train=True, mutable=["batch_stats"])
    want = 0.5 * (np.maximum(0, 1 - np.asarray(real)).mean() + np.maximum(0, 1 + np.asarray(fake_logits)).mean())
    _, m = setup.step(state, parallel.global_batch(b, setup.mesh), rng)
    np.testing.assert_allclose(float(m["d/loss"]), want, rtol=1e-5)


def test_one_step_moves_d_and_g_the_right_way():
    c = config()
    c.optim.d_lr = c.optim.g_lr = 1e-3  # a visible move in one step, small enough to be a descent step
    setup = DCGANSetup(c, parallel.make_mesh(jax.devices()[:1]))
    state = setup.init_state(0)
    b, rng = batch(), jax.random.PRNGKey(3)
    d_of = lambda d_params, x: jax.nn.sigmoid(setup.disc.apply(  # noqa: E731  D in training mode
        {"params": d_params, "batch_stats": state.d_stats}, x, train=True, mutable=["batch_stats"])[0]).mean()
    z = jax.random.normal(rng, (8, setup.z_dim))
    g_of = lambda g_params: setup.gen.apply(  # noqa: E731
        {"params": g_params, "batch_stats": state.g_stats}, z, train=True, mutable=["batch_stats"])[0]
    old_d, old_g, fake = state.d_params, state.g_params, g_of(state.g_params)
    new, m = setup.step(jax.tree.map(jnp.copy, state), parallel.global_batch(b, setup.mesh), rng)
    # D's step separates the real batch from the fakes: D(x) - D(G(z)) grows, and so does D(x).
    gap = lambda d_params: float(d_of(d_params, b["image"]) - d_of(d_params, fake))  # noqa: E731
    assert gap(new.d_params) > gap(old_d) + 1e-3
    assert float(d_of(new.d_params, b["image"])) > float(d_of(old_d, b["image"]))
    np.testing.assert_allclose(m["d/fake_after"], d_of(new.d_params, fake), rtol=1e-5)
    assert float(d_of(new.d_params, g_of(new.g_params))) > float(d_of(new.d_params, fake))  # G fools D more
    assert float(jnp.abs(g_of(new.g_params) - g_of(old_g)).max()) > 0


def test_same_seed_same_result(setup1):
    (a, ma), (b, mb) = run(setup1, 2), run(setup1, 2)
    assert ma == mb
    jax.tree.map(np.testing.assert_array_equal, a, b)
    _, mc = run(setup1, 2, seed=1)
    assert mc != ma


def test_eight_devices_equal_one_device(setup1, setup8):
    """The batch is split over 8 devices, each slice with its own brightness: BatchNorm statistics that
    were per-device would change the losses and the running averages."""
    s1, m1 = run(setup1, 3)
    s8, m8 = run(setup8, 3)
    for a, b in zip(m1, m8):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=2e-4, atol=1e-5, err_msg=k)
    for part in ("g_stats", "d_stats", "g_params", "d_params"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5, err_msg=part),
                     getattr(s1, part), getattr(s8, part))


def test_ema_and_conditional_paths_run():
    c = config(conditional=True)
    c.optim.ema_decay = 0.5
    setup = DCGANSetup(c, parallel.make_mesh(jax.devices()[:1]))
    s, m = run(setup, 1)
    assert np.isfinite(m[0]["g/loss"]) and "label_embed" in s.d_params
    # ema = 0.5 * init + 0.5 * updated
    init = jax.device_get(setup.init_state(0)).g_params
    jax.tree.map(lambda e, i, p: np.testing.assert_allclose(e, 0.5 * i + 0.5 * p, rtol=1e-5, atol=1e-7),
                 s.ema_params, init, s.g_params)
