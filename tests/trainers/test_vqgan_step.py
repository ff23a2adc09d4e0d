"""The stage-1 step: overfits, is deterministic, compiles once, and 8 devices equal 1 device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from vqgan_jax.losses import gan as losses
from vqgan_jax.losses.reconstruction import reconstruction_loss
from vqgan_jax.train import parallel
from vqgan_jax.trainers.vqgan import VQGANSetup


def tiny_config(**overrides):
    c = demo.get_config("tiny")
    for k, v in overrides.items():
        sec, key = k.split(".")
        c[sec][key] = v
    return c


def make_batch(n=8, size=16, seed=0):
    from vqgan_jax.data import synthetic
    imgs, labels = synthetic.synthetic_flowers(size, n, seed)
    return {"image": imgs.astype(np.float32) / 127.5 - 1.0, "label": np.asarray(labels, np.int32)}


@pytest.fixture(scope="module")
def setup8():
    return VQGANSetup(tiny_config())


def run_steps(setup, n, batch, seed=0, unused_codes=False):
    """n steps on one batch; unused_codes: every code's usage EMA starts at 0 instead of 1, so codes the
    first batch assigns fewer than 5 vectors to fall below the preset's restart threshold (0.5) at once."""
    state = setup.init_state(seed)
    if unused_codes:
        quantize = state.vq_stats["quantize"]
        state = state.replace(vq_stats={**state.vq_stats, "quantize": {**quantize, "usage": quantize["usage"] * 0.0}})
    gb = parallel.global_batch(batch, setup.mesh)
    key = jax.random.PRNGKey(seed)
    out = []
    for s in range(n):
        state, m = setup.step(state, gb, jax.random.fold_in(key, s))
        out.append(jax.device_get(m))
    return state, out


def test_compiles_once_across_disc_start(setup8):
    # tiny preset: disc_start = 2, so steps 0-1 run without D and 2-3 with it.
    state, ms = run_steps(setup8, 4, make_batch())
    assert setup8.compile_count() == 1
    assert [float(m["disc_on"]) for m in ms] == [0.0, 0.0, 1.0, 1.0]
    assert float(ms[0]["d/loss"]) == 0.0 and float(ms[0]["d_weight"]) == 0.0
    assert float(ms[3]["d/loss"]) > 0.0 and float(ms[3]["d_weight"]) > 0.0
    assert int(state.step) == 4


def test_discriminator_untouched_before_disc_start(setup8):
    state0 = setup8.init_state(0)
    d0 = jax.device_get(state0.d_params)
    state, _ = run_steps(setup8, 2, make_batch())
    d1 = jax.device_get(state.d_params)
    for a, b in zip(jax.tree.leaves(d0), jax.tree.leaves(d1)):
        np.testing.assert_array_equal(a, b)


def test_deterministic(setup8):
    _, m1 = run_steps(setup8, 3, make_batch())
    _, m2 = run_steps(setup8, 3, make_batch())
    for a, b in zip(m1, m2):
        for k in a:
            assert float(a[k]) == float(b[k]), k


def test_eight_devices_equal_one_device(setup8):
    assert jax.device_count() == 8
    # Usage EMAs start at 0, so codes restart from the first step and the global-batch restart path is
    # part of the comparison. The 8-device program is the shared fixture's (the tiny run folder's too).
    setup1 = VQGANSetup(tiny_config(), parallel.make_mesh(jax.devices()[:1]))
    s8, m8 = run_steps(setup8, 3, make_batch(), unused_codes=True)
    s1, m1 = run_steps(setup1, 3, make_batch(), unused_codes=True)
    assert sum(float(m["codebook/restarted"]) for m in m8) > 0
    for a, b in zip(m8, m1):
        for k in a:
            np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=2e-4, atol=2e-5, err_msg=k)
    # Conv biases followed by GroupNorm have (mathematically) zero gradient; Adam rescales their
    # round-off noise to steps of about lr, so those may differ by up to 2 * lr per step. Every
    # other parameter agrees far more tightly, which the total difference checks.
    lr, diffs = tiny_config().optim.g_lr, []
    for a, b in zip(jax.tree.leaves(jax.device_get(s8.g_params)), jax.tree.leaves(jax.device_get(s1.g_params))):
        np.testing.assert_allclose(a, b, rtol=0, atol=2 * 3 * lr)
        diffs.append(np.abs(a - b).ravel())
    assert np.median(np.concatenate(diffs)) < 1e-6


def test_adaptive_weight_matches_full_backward(setup8):
    """The last-layer shortcut equals taming's definition computed with two full jax.grad calls."""
    cfg = tiny_config()
    setup = setup8
    state = setup.init_state(0)
    x = jnp.asarray(make_batch()["image"])
    variables = {"params": state.g_params, "vq_stats": state.vq_stats}

    def decoded(g_params):
        x_hat, _ = setup.model.apply({**variables, "params": g_params}, x, train=False)
        return x_hat

    def rec_loss(g_params):
        return reconstruction_loss(x, decoded(g_params), "l1")

    def adv_loss(g_params):
        logits = setup.disc.apply({"params": state.d_params}, decoded(g_params))
        return losses.g_adv_loss(logits, "hinge")

    @jax.jit
    def reference(g_params):
        g_rec = jax.grad(rec_loss)(g_params)["decoder"]["conv_out"]["kernel"]
        g_adv = jax.grad(adv_loss)(g_params)["decoder"]["conv_out"]["kernel"]
        return losses.adaptive_weight(g_rec, g_adv, cfg.loss.disc_weight)

    @jax.jit
    def shortcut(g_params):
        x_hat, aux = setup.model.apply({**variables, "params": g_params}, x, train=False)
        kernel = g_params["decoder"]["conv_out"]["kernel"]
        c_rec = jax.grad(lambda xh: reconstruction_loss(x, xh, "l1"))(x_hat)
        c_adv = jax.grad(lambda xh: losses.g_adv_loss(setup.disc.apply({"params": state.d_params}, xh), "hinge"))(
            x_hat)
        return losses.adaptive_weight(losses.conv_kernel_grad(aux["h_last"], kernel, c_rec),
                                      losses.conv_kernel_grad(aux["h_last"], kernel, c_adv), cfg.loss.disc_weight)

    want, got = reference(state.g_params), shortcut(state.g_params)
    assert 0 < float(want) < 1e4
    np.testing.assert_allclose(float(got), float(want), rtol=1e-4)


def test_overfits_one_batch():
    cfg = tiny_config(**{"optim.g_lr": 3e-3, "loss.disc_start": 10**6, "quantizer.restart_threshold": 0.0})
    setup = VQGANSetup(cfg, parallel.make_mesh(jax.devices()[:1]))
    _, ms = run_steps(setup, 80, make_batch(seed=3))   # on XLA:CPU: g/rec falls to 0.26x by step 80
    first, last = float(ms[0]["g/rec"]), float(ms[-1]["g/rec"])
    assert last <= first / 3, (first, last)
