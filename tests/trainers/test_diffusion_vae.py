"""The latent-diffusion prior over a VAE (train.latent_source.vae_source): the source encodes to the VAE's
posterior means and decodes with its decoder, the trainer caches those latents, sampling paints through
the VAE, and the VAEs it cannot use are refused in one line."""
import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from configs.vae import flowers64
from vqgan_jax import trainers
from vqgan_jax.errors import UserError
from vqgan_jax.sampling import generators
from vqgan_jax.train import latent_source, loading

pytestmark = pytest.mark.slow  # trains a VAE and a prior over it: the slow tier (`make test-slow`, run by CI)


def tiny_vae(latent_dim=0):
    c = flowers64.get_config("tiny")
    with c.unlocked():
        c.model.latent_dim = latent_dim
        c.train.num_steps = 2
        c.train.image_every = 0
        c.train.eval_every = 0
        c.diffusion.num_steps = 2
        c.diffusion.image_every = 0
    return c


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("vae_diffusion"))
    trainers.train("vae", tiny_vae(), work)
    trainers.train("diffusion", tiny_vae(), work)
    return work


def test_source_is_the_vae_posterior_mean_and_decoder(vae_run):
    source = latent_source.load(vae_run, "vae", "continuous")
    vae = loading.load_vae(vae_run)
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (8, 16, 16, 3)), jnp.float32)
    label = jnp.zeros((8,), jnp.int32)
    z = np.asarray(source.encode(x))
    assert z.shape == (8, 8, 8, 4) and source.latent_shape == (8, 8, 4)   # 16 / 2, z_channels 4
    mean, logvar = vae.model.apply(vae.variables, x, label, method=lambda m, x, y: m.encode_latents(x, y))
    np.testing.assert_allclose(z, np.asarray(mean), rtol=1e-5, atol=1e-6)
    assert not np.allclose(z, z + np.exp(np.asarray(logvar) / 2))          # the mean, not a draw
    images = np.asarray(source.decode(jnp.asarray(z)))
    want = vae.model.apply(vae.variables, jnp.asarray(z), label, method=lambda m, z, y: m.decode_latents(z, y))
    np.testing.assert_allclose(images, np.asarray(want), rtol=1e-5, atol=1e-6)


def test_trainer_caches_vae_latents_and_sampling_paints_through_the_vae(vae_run):
    meta = json.load(open(os.path.join(vae_run, "latents", "meta.json")))
    assert meta["source"] == "vae" and meta["kind"] == "continuous" and meta["shape"] == [8, 8, 4]
    assert meta["scale"] == pytest.approx(1.0 / meta["std"])
    layout = json.load(open(os.path.join(vae_run, "diffusion", "layout.json")))
    assert layout["source"] == "vae"
    assert "diffusion" in generators.available(vae_run)
    a = generators.generate(vae_run, "diffusion", 4, seed=0, batch_size=4, steps=3)
    b = generators.generate(vae_run, "diffusion", 4, seed=0, batch_size=4, steps=3)
    assert a.shape == (4, 16, 16, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)


def test_unusable_vaes_are_refused(vae_run, tmp_path):
    with pytest.raises(UserError, match="a VAE's latents are continuous"):
        latent_source.load(vae_run, "vae", "quantized")
    work = tmp_path / "vector"                       # the same run folder, its config saying "vector latent"
    shutil.copytree(os.path.join(vae_run, "vae"), work / "vae")
    cfg = json.load(open(work / "vae" / "config.json"))
    cfg["model"]["latent_dim"] = 16
    json.dump(cfg, open(work / "vae" / "config.json", "w"))
    with pytest.raises(UserError, match="latent_dim=0"):
        latent_source.load(str(work), "vae", "continuous")
