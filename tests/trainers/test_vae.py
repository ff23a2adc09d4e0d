"""The VAE step and trainer on the tiny preset: overfits a batch, deterministic, 8 devices equal 1 device,
the VAE-GAN and the conditional VAE train, resume equals a straight run."""
import os

import jax
import numpy as np
import pytest

from configs.vae import flowers64
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train import parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.vae import VAESetup, train as train_vae


def tiny(num_steps=4, **overrides):
    c = flowers64.get_config("tiny")
    c.train.num_steps = num_steps
    for k, v in overrides.items():
        sec, key = k.split(".")
        c[sec][key] = v
    return c


def make_batch(n=8, size=16, seed=0):
    from vqgan_jax.data import synthetic
    imgs, labels = synthetic.synthetic_flowers(size, n, seed)
    return {"image": imgs.astype(np.float32) / 127.5 - 1.0, "label": np.asarray(labels, np.int32) % 3}


def run_steps(setup, n, batch, seed=0):
    state = setup.init_state(seed)
    gb = parallel.global_batch(batch, setup.mesh)
    key = jax.random.PRNGKey(seed)
    out = []
    for s in range(n):
        state, m = setup.step(state, gb, jax.random.fold_in(key, s))
        out.append(jax.device_get(m))
    return state, out


def tiny_laplace():
    """The tiny preset with an L1 (laplace) likelihood: its reconstruction term can fall far when a batch is
    overfitted (the bernoulli BCE stops at the targets' entropy). The step tests share it, so the 1-device
    program compiles once for the 8-device comparison and the overfitting test."""
    return tiny(**{"model.likelihood": "laplace"})


@pytest.fixture(scope="module")
def setup8():
    return VAESetup(tiny_laplace())


@pytest.fixture(scope="module")
def setup1():
    return VAESetup(tiny_laplace(), parallel.make_mesh(jax.devices()[:1]))


def test_deterministic_and_beta_warms_up(setup8):
    _, m1 = run_steps(setup8, 3, make_batch())
    _, m2 = run_steps(setup8, 3, make_batch())
    for a, b in zip(m1, m2):
        for k in a:
            assert float(a[k]) == float(b[k]), k
    assert [float(m["beta"]) for m in m1] == [0.0, 0.5, 1.0]  # kl_warmup_steps = 2
    assert setup8.compile_count() == 1
    m = m1[-1]
    dims = 16 * 16 * 3
    np.testing.assert_allclose(m["neg_elbo_per_dim"], (m["rec"] + m["kl"]) / dims, rtol=1e-5)
    np.testing.assert_allclose(m["loss"], m["rec"] + m["beta"] * m["kl_term"], rtol=1e-5)


def test_eight_devices_equal_one_device(setup8, setup1):
    assert jax.device_count() == 8
    s8, m8 = run_steps(setup8, 3, make_batch())
    s1, m1 = run_steps(setup1, 3, make_batch())
    for a, b in zip(m8, m1):
        for k in a:
            np.testing.assert_allclose(float(a[k]), float(b[k]), rtol=2e-4, atol=2e-5, err_msg=k)
    lr, diffs = tiny().optim.lr, []
    for a, b in zip(jax.tree.leaves(jax.device_get(s8.params)), jax.tree.leaves(jax.device_get(s1.params))):
        np.testing.assert_allclose(a, b, rtol=0, atol=2 * 3 * lr)  # see test_vqgan_step: GroupNorm'd conv biases
        diffs.append(np.abs(a - b).ravel())
    assert np.median(np.concatenate(diffs)) < 1e-6


def test_overfits_one_batch(setup1):
    _, ms = run_steps(setup1, 120, make_batch(seed=3))
    first, last = float(ms[0]["rec"]), float(ms[-1]["rec"])
    assert last < first / 3, (first, last)
    assert all(np.isfinite(float(m["loss"])) for m in ms)


def test_vae_gan_conditional_bf16_step():
    """One compiled setup covers the VAE-GAN (D switches on at step 1), the conditional VAE and bf16 compute."""
    cfg = tiny(**{"loss.disc_weight": 0.5, "loss.disc_start": 1, "model.conditional": True, "model.dtype": "bfloat16"})
    cfg.data.num_classes = 3
    setup = VAESetup(cfg, parallel.make_mesh(jax.devices()[:1]))
    assert setup.model.num_classes == 3 and setup.disc is not None
    state0 = setup.init_state(0)
    d0 = jax.device_get(state0.d_params)
    state, ms = run_steps(setup, 3, make_batch())
    assert float(ms[0]["d_weight"]) == 0.0 and float(ms[0]["d/loss"]) == 0.0
    assert float(ms[2]["d_weight"]) > 0.0 and float(ms[2]["d/loss"]) > 0.0
    changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(d0), jax.tree.leaves(jax.device_get(state.d_params)))]
    assert any(changed)
    assert all(np.isfinite(float(m["loss"])) for m in ms)
    assert jax.tree.leaves(state.params)[0].dtype == np.float32  # bf16 computes, the parameters stay float32


def final_state(work):
    setup = VAESetup(runs.read_config(work, "vae"))
    return jax.device_get(Checkpointer(runs.checkpoint_dir(work, "vae"), async_save=False).restore(setup.abstract_state()))


@pytest.mark.slow
def test_resume_equals_straight_run_and_writes_pictures(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train_vae(tiny(4), a)
    train_vae(tiny(2), b)
    train_vae(tiny(4), b)
    sa, sb = final_state(a), final_state(b)
    assert int(sa.step) == int(sb.step) == 4
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
    rows = [r for r in metrics_lib.read_metrics(os.path.join(a, "vae", "metrics.jsonl")) if "eval/kl" in r]
    assert [r["step"] for r in rows] == [2, 4] and all(r["eval/active_units"] <= 16 for r in rows)
    assert sorted(os.listdir(os.path.join(a, "vae", "images"))) == ["reconstructions", "step_0000002.png",
                                                                       "step_0000004.png"]
    from vqgan_jax.viz import training
    pics = training.write_training_pictures(a, str(tmp_path / "pics"), tensorboard=False)
    assert set(pics) == {"vae/evolution", "vae/loss_curves"}
