"""The latent-diffusion trainer on the tiny preset: latents cached with their scale, its step (overfits a
batch, 8 devices = 1), its run folder, resume equality, sampling from it (same seed, no recompilation)."""
import glob
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from vqgan_jax.data import latents as latents_lib
from vqgan_jax.errors import UserError
from vqgan_jax.sampling import latent_diffusion
from vqgan_jax.train import latent_source, parallel, runs
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.diffusion import DiffusionSetup, latent_batches, train


def tiny():
    return demo.get_config("tiny")


@pytest.fixture(scope="module")
def diff_run(diffusion_run_dir):
    """The session's tiny stage 1 + a 4-step diffusion prior trained on it (tests/conftest.py)."""
    return diffusion_run_dir


def test_diffusion_run_folder(diff_run):
    out = os.path.join(diff_run, "diffusion")
    assert json.load(open(os.path.join(out, "config.json")))["diffusion"]["model"] == "unet"
    assert Checkpointer(os.path.join(out, "checkpoints"), async_save=False).all_steps() == [2, 4]
    rows = metrics_lib.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert {"step", "loss", "mse", "grad_norm", "mse_high_noise", "images_per_sec"} <= set(rows[-1])
    assert glob.glob(os.path.join(out, "tb", "events.out.tfevents.*"))
    assert sorted(os.listdir(os.path.join(out, "images"))) == ["step_0000002.png", "step_0000004.png"]
    # 64 synthetic training images and their mirror images; 16 px with ch_mult (1, 2) -> 8x8 x code_dim 8
    z, labels, meta = latents_lib.load_latents(latent_source.latents_dir(diff_run))
    assert z.shape == (128, 8, 8, 8) and labels.shape == (128,) and meta["num_classes"] == 6
    layout = latent_diffusion.read_layout(diff_run)
    assert layout["shape"] == [8, 8, 8] and layout["num_classes"] == 6 and layout["source"] == "vqgan"
    # the scale is 1 / std of the training latents (float16 shards: 1e-3)
    assert layout["scale"] == pytest.approx(1.0 / np.std(z), rel=1e-3)
    assert np.std(z * layout["scale"]) == pytest.approx(1.0, rel=1e-3)


def test_latents_are_the_encoders_and_are_reused(diff_run, capsys):
    source = latent_source.load(diff_run, "vqgan", "continuous")
    meta = latent_source.encode_training_set(diff_run, source, flip=True)
    assert "reusing 128 latents" in capsys.readouterr().out and meta["stage_step"] == 4
    from vqgan_jax.data import pipeline
    batch = next(pipeline.iterate_numpy(pipeline.make_dataset(
        source.config.data, split="train", global_batch_size=8, seed=0, training=False, repeat=False)))
    z, _, _ = latents_lib.load_latents(latent_source.latents_dir(diff_run))
    direct = np.asarray(source.encode(parallel.global_batch(batch, source.mesh)["image"]))
    np.testing.assert_allclose(direct, z[:8], atol=2e-3, rtol=2e-3)     # first shard rows: the same images
    images = np.asarray(source.decode(jnp.asarray(direct)))
    assert images.shape == (8, 16, 16, 3)


def test_quantized_latents_are_codebook_vectors(diff_run):
    source = latent_source.load(diff_run, "vqgan", "quantized")
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)).astype(np.float32))
    z = np.asarray(source.encode(parallel.global_batch({"image": np.asarray(x)}, source.mesh)["image"]))
    vq = __import__("vqgan_jax.train.loading", fromlist=["load_vqgan"]).load_vqgan(diff_run)
    codebook = np.asarray(vq.variables["params"]["quantize"]["codebook"])
    dist = ((z.reshape(-1, 1, 8) - codebook[None]) ** 2).sum(-1).min(-1)
    assert dist.max() < 1e-8
    with pytest.raises(UserError, match="diffusion.latents"):
        latent_source.load(diff_run, "vqgan", "pixels")
    with pytest.raises(UserError, match="no latent source"):
        latent_source.load(diff_run, "gan", "continuous")


LAYOUT = {"source": "vqgan", "kind": "continuous", "shape": [4, 4, 4], "scale": 1.0, "std": 1.0,
          "stage_step": 0, "num_classes": 3, "class_names": []}


def run_steps(setup, batch, steps, seed=0, same_rng=False):
    """steps updates on one batch; same_rng: the same timesteps, noise and labels at every step."""
    state = setup.init_state(0)
    gb = parallel.global_batch(batch, setup.mesh)
    ms = []
    for s in range(steps):
        state, m = setup.step(state, gb, jax.random.fold_in(jax.random.PRNGKey(seed), 0 if same_rng else s))
        ms.append({k: float(v) for k, v in jax.device_get(m).items()})
    return state, ms


def latent_batch(n=8, shape=(4, 4, 4), num_classes=3):
    rng = np.random.default_rng(0)
    return {"latent": rng.standard_normal((n, *shape)).astype(np.float32),
            "label": rng.integers(0, num_classes, (n,)).astype(np.int32)}


def test_denoiser_overfits_a_batch():
    """The same noisy batch (timesteps, noise) every step: the denoiser learns to map it to its targets."""
    cfg = tiny().diffusion
    cfg.lr, cfg.num_steps, cfg.warmup_steps, cfg.label_dropout, cfg.ema_decay = 3e-3, 60, 5, 0.0, 0.0
    setup = DiffusionSetup(cfg, LAYOUT, parallel.make_mesh(jax.devices()[:1]))
    _, ms = run_steps(setup, latent_batch(), 60, same_rng=True)
    assert ms[0]["mse"] > 0.6   # v-target of unit-variance data, E||v||^2 = 1, from the zero-initialised output
    assert ms[-1]["mse"] < 0.05 * ms[0]["mse"]


def test_step_eight_devices_equal_one(diff_run):
    """The trainer's own setup (8 devices here, reused: no second compile) against one device."""
    layout = latent_diffusion.read_layout(diff_run)
    cfg = tiny().diffusion
    s8 = DiffusionSetup.shared(cfg, layout, parallel.make_mesh(), ops=tiny().ops)
    s1 = DiffusionSetup(cfg, layout, parallel.make_mesh(jax.devices()[:1]))
    batch = latent_batch(shape=(8, 8, 8), num_classes=6)
    st8, m8 = run_steps(s8, batch, 3)
    st1, m1 = run_steps(s1, batch, 3)
    for a, b in zip(m8, m1):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)
    for a, b in zip(jax.tree.leaves(st8.ema_params), jax.tree.leaves(st1.ema_params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_resume_equals_straight_run(diff_run, tmp_path):
    work = str(tmp_path / "w")
    shutil.copytree(diff_run, work)
    shutil.rmtree(os.path.join(work, "diffusion", "checkpoints", "4"))
    train(tiny(), work)       # resumes from step 2
    straight = latent_diffusion.load(diff_run)
    resumed = latent_diffusion.load(work)
    assert resumed.step == 4
    for a, b in zip(jax.tree.leaves(straight.params), jax.tree.leaves(resumed.params)):
        np.testing.assert_array_equal(a, b)


def test_latent_batches_resume_exactly():
    z = np.arange(40, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 2, 1), np.float32)
    labels = np.arange(40)
    straight = latent_batches(z, labels, global_batch=8, seed=1, start_step=0)
    first = [next(straight) for _ in range(12)]
    resumed = latent_batches(z, labels, global_batch=8, seed=1, start_step=7)
    for want in first[7:]:
        np.testing.assert_array_equal(next(resumed)["latent"], want["latent"])
    assert sorted(np.concatenate([b["label"] for b in first[:5]]).tolist()) == list(range(40))


def test_generate_same_seed_same_images_and_one_compile(diff_run):
    a = latent_diffusion.generate(diff_run, 3, seed=0, batch_size=2, sampler="ddim", steps=3, eta=0.5)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    b = latent_diffusion.generate(diff_run, 3, seed=0, batch_size=2, sampler="ddim", steps=3, eta=0.5)
    np.testing.assert_array_equal(a, b)
    c = latent_diffusion.generate(diff_run, 3, seed=1, batch_size=2, sampler="ddim", steps=3, eta=1.0, label=2)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 0
    loaded = latent_diffusion.load(diff_run)
    jitted = latent_diffusion.make_sampler(loaded.model, loaded.schedule, loaded.objective, sampler="ddim", steps=3,
                                           guided=False, null_label=6)
    # three calls above (seeds, eta, labels) and every batch of them: one compiled program
    assert jitted._cache_size() == 1


def test_guided_sampling_and_bad_input(diff_run):
    x = latent_diffusion.generate(diff_run, 2, seed=0, batch_size=2, sampler="dpmpp2m", steps=2, label=1,
                                  cfg_scale=3.0)
    assert x.shape == (2, 16, 16, 3)
    with pytest.raises(UserError, match="steps"):
        latent_diffusion.generate(diff_run, 2, steps=0)
    with pytest.raises(UserError, match="--cfg_scale needs --label"):
        latent_diffusion.generate(diff_run, 2, cfg_scale=2.0)
    with pytest.raises(UserError, match="--label must be in 0..5"):
        latent_diffusion.generate(diff_run, 2, label=6)
    with pytest.raises(UserError, match="unconditional"):
        latent_diffusion.check_label({"num_classes": 0}, 1)
    with pytest.raises(UserError, match="sampler"):
        latent_diffusion.generate(diff_run, 2, sampler="euler")


def test_training_without_stage1_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no vqgan checkpoint"):
        train(tiny(), str(tmp_path / "empty"))
    with pytest.raises(UserError, match="no diffusion prior"):
        latent_diffusion.generate(str(tmp_path / "empty"), 2)
