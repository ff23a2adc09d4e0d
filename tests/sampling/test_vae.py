"""VAE sampling: slerp keeps the norm, interpolation endpoints decode to the two reconstructions, the same
seed gives the same samples, labels are checked; the generators registry picks the run's generator."""
import os

import jax
import numpy as np
import pytest

from configs.vae import flowers64
from tests import jit
from vqgan_jax import models
from vqgan_jax.errors import UserError
from vqgan_jax.sampling import generators, vae as vs
from vqgan_jax.train import loading, parallel


@pytest.fixture(scope="module")
def loaded():
    c = flowers64.get_config("tiny")
    c.model.conditional = True
    c.data.num_classes = 3
    model = models.get("vae").from_config(c)
    x = np.zeros((1, 16, 16, 3), np.float32)
    variables = jit.init(model, {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x,
                         np.zeros((1,), np.int32), train=False)
    return loading.Loaded(c, model, {"params": variables["params"]}, 0, "plain", parallel.make_mesh())


def test_slerp_keeps_the_norm_and_ends_at_the_endpoints():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(4, 4, 2)), rng.normal(size=(4, 4, 2))
    b = b / np.linalg.norm(b) * np.linalg.norm(a)
    t = np.linspace(0, 1, 7)
    path = vs.slerp(a, b, t)
    assert path.shape == (7, 4, 4, 2)
    np.testing.assert_allclose(np.linalg.norm(path.reshape(7, -1), axis=1), np.linalg.norm(a), rtol=1e-5)
    np.testing.assert_allclose(path[0], a, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path[-1], b, rtol=1e-5, atol=1e-6)
    # the angle to a grows linearly in t
    cos = path.reshape(7, -1) @ a.ravel() / np.linalg.norm(a) ** 2
    angles = np.arccos(np.clip(cos, -1, 1))
    np.testing.assert_allclose(np.diff(angles), angles[-1] / 6, rtol=1e-4)
    lin = vs.lerp(a, b, np.array([0.5]))[0]
    np.testing.assert_allclose(lin, (a + b) / 2, rtol=1e-6)
    assert np.linalg.norm(lin) < np.linalg.norm(a)  # the reason for slerp: lerp cuts through the middle


def test_interpolation_endpoints_are_the_two_reconstructions(loaded):
    rng = np.random.default_rng(1)
    a, b = rng.uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    for spherical in (False, True):
        x = vs.interpolate(loaded, a, b, 5, spherical=spherical, label=2)
        rec = np.asarray(loaded.run("reconstruct", np.stack([a, b]), np.array([2, 2], np.int32)))
        np.testing.assert_allclose(x[0], rec[0], atol=1e-5)
        np.testing.assert_allclose(x[-1], rec[1], atol=1e-5)
    strip = vs.interpolation_strip(loaded, a, b, 4, label=0)
    assert strip.dtype == np.uint8 and strip.shape == (2 + 16 + 2, 2 + 6 * 18, 3)


def test_samples_are_seeded_and_labels_checked(loaded):
    s1 = vs.sample_images(loaded, 5, seed=3, batch_size=4, label=1)
    s2 = vs.sample_images(loaded, 5, seed=3, batch_size=4, label=1)
    s3 = vs.sample_images(loaded, 5, seed=4, batch_size=4, label=1)
    assert s1.shape == (5, 16, 16, 3) and s1.dtype == np.uint8
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    z0 = vs.sample_latents(loaded, 3, 0, temperature=0.0)
    assert np.all(z0 == 0)
    with pytest.raises(UserError, match="outside the VAE's classes 0..2"):
        vs.sample_images(loaded, 2, label=3)
    with pytest.raises(UserError, match="--steps"):
        vs.interpolate(loaded, np.zeros((16, 16, 3)), np.zeros((16, 16, 3)), 1)


def test_generators_registry(tmp_path):
    work = str(tmp_path)
    assert set(generators.GENERATORS) >= {"prior", "vae"}
    assert generators.resolve(work) is None
    os.makedirs(os.path.join(work, "vae"))
    assert generators.resolve(work) == "vae"
    os.makedirs(os.path.join(work, "prior"))
    assert generators.resolve(work) == "prior" and generators.resolve(work, "vae") == "vae"
    with pytest.raises(UserError, match="unknown generator 'gan'"):
        generators.resolve(work, "gan")
    with pytest.raises(UserError, match="has no dcgan/ part|unknown generator"):
        generators.resolve(work, "dcgan")
    generators.check_options("vae", {"temperature": 0.5, "label": 1})
    with pytest.raises(UserError, match="the vae generator does not take --top_k"):
        generators.check_options("vae", {"top_k": 5})
    generators.check_options("prior", {"top_k": 5, "cfg_scale": 2.0})
    # Every generator of the package is registered; with both priors the GPT-2 samples unless asked.
    assert set(generators.GENERATORS) == {"prior", "diffusion", "dcgan", "vae"}
    os.makedirs(os.path.join(work, "diffusion"))
    os.makedirs(os.path.join(work, "dcgan"))
    assert generators.available(work) == ["prior", "diffusion", "dcgan", "vae"]
    assert generators.resolve(work) == "prior" and generators.resolve(work, "diffusion") == "diffusion"
    generators.check_options("diffusion", {"sampler": "ddim", "steps": 10, "eta": 0.5, "label": 1, "cfg_scale": 2})
    with pytest.raises(UserError, match="the diffusion generator does not take --top_k"):
        generators.check_options("diffusion", {"top_k": 5})
    with pytest.raises(UserError, match="the dcgan generator does not take --temperature"):
        generators.check_options("dcgan", {"temperature": 0.5})


def test_class_means_and_latent_strip(loaded):
    rng = np.random.default_rng(2)
    images = rng.uniform(-1, 1, (6, 16, 16, 3)).astype(np.float32)
    labels = np.array([0, 2, 0, 2, 2, 1], np.int32)
    means = vs.class_means(loaded, images, labels)
    each = vs.encode_means(loaded, images, labels)
    assert sorted(means) == [0, 1, 2]
    np.testing.assert_allclose(means[2], each[[1, 3, 4]].mean(axis=0), rtol=1e-5, atol=1e-6)
    strip = vs.latent_strip(loaded, means[0], means[2], 3, spherical=True, label=1)
    assert strip.shape == (2 + 18, 2 + 3 * 18, 3)
