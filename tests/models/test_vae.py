"""The VAE model: latent shapes (vector and spatial), the class-conditional VAE uses its label, the ELBO of a
tiny model against a Monte-Carlo estimate, and configs that build."""
import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import jit
from vqgan_jax import models
from vqgan_jax.errors import UserError
from vqgan_jax.losses import vae as L
from vqgan_jax.models.vae import VAE

SMALL = dict(image_size=16, ch=8, ch_mult=(1, 2), z_channels=4, attn_resolutions=())


def _x(n=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n, 16, 16, 3)), jnp.float32)


@pytest.mark.parametrize("latent_dim,shape", [(12, (12,)), (0, (8, 8, 4))])
def test_latent_shapes(latent_dim, shape):
    model = VAE(latent_dim=latent_dim, **SMALL)
    x, label = _x(), np.zeros((2,), np.int32)
    variables = jit.init(model, {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x, label,
                         train=False)

    @jax.jit  # every forward pass of the test in one program (op by op, each op compiles on its own)
    def forward(variables, x, label, key):
        out, aux = model.apply(variables, x, label, train=True, rngs={"latent": key})
        mean, logvar = model.apply(variables, x, label, method=VAE.encode_latents)
        images = model.apply(variables, aux["z"], label, method=VAE.decode_latents)
        rec = model.apply(variables, x, label, method=VAE.reconstruct)
        return out, aux, mean, logvar, images, rec, model.apply(variables, mean, label, method=VAE.decode_latents)

    out, aux, mean, logvar, images, rec, rec_of_mean = jax.tree.map(
        np.asarray, forward(variables, x, label, jax.random.PRNGKey(2)))
    assert model.latent_shape == shape and out.shape == x.shape
    assert aux["mean"].shape == aux["logvar"].shape == aux["z"].shape == (2, *shape)
    np.testing.assert_allclose(mean, aux["mean"], rtol=1e-6)
    # z = mean + exp(logvar / 2) eps: eps recovered is standard normal-ish and the sample differs from the mean
    eps = (aux["z"] - mean) / np.exp(0.5 * logvar)
    assert 0.3 < float(np.std(eps)) < 3 and not np.allclose(aux["z"], mean)
    assert images.shape == x.shape and float(np.min(images)) >= -1 and float(np.max(images)) <= 1  # Bernoulli
    np.testing.assert_allclose(rec, rec_of_mean, rtol=1e-5, atol=1e-6)


def test_conditional_vae_uses_its_label():
    for latent_dim in (12, 0):
        model = VAE(latent_dim=latent_dim, num_classes=3, class_dim=4, **SMALL)
        x = _x()
        variables = jit.init(model, {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x,
                             np.zeros((2,), np.int32), train=False)
        assert variables["params"]["class_embed"]["embedding"].shape == (3, 4)

        # one program each for the decoder and the encoder, both run twice (op by op, each op compiles)
        decode = jax.jit(lambda v, z, labels: model.apply(v, z, labels, method=VAE.decode_latents))
        encode = jax.jit(lambda v, x, labels: model.apply(v, x, labels, method=VAE.encode_latents)[0])
        z = np.zeros((2, *model.latent_shape), np.float32)
        a, b = (np.asarray(decode(variables, z, np.array(labels, np.int32))) for labels in ([0, 0], [0, 2]))
        ma, mb = (np.asarray(encode(variables, x, np.array(labels, np.int32))) for labels in ([1, 1], [1, 2]))
        np.testing.assert_array_equal(a[0], b[0])
        assert float(np.max(np.abs(a[1] - b[1]))) > 1e-4
        assert float(np.max(np.abs(ma[1] - mb[1]))) > 1e-5


def test_elbo_of_a_tiny_model_against_monte_carlo():
    """The loss's -ELBO = E_q[-log p(x|z)] + KL (analytic) equals the Monte-Carlo estimate
    E_q[-log p(x|z) + log q(z|x) - log p(z)] with the same samples, up to sampling error."""
    model = VAE(latent_dim=6, **SMALL)
    x, label = _x(1, 3), np.zeros((1,), np.int32)
    params = jit.init(model, {"params": jax.random.PRNGKey(0), "latent": jax.random.PRNGKey(1)}, x, label,
                      train=False)["params"]
    num = 1000

    @jax.jit  # the encoder, the 1000 samples and the KL in one program
    def estimates(params, key):
        mean, logvar = model.apply({"params": params}, x, label, method=VAE.encode_latents)

        def one(key):
            out, aux = model.apply({"params": params}, x, label, train=False, rngs={"latent": key})
            z = aux["z"]
            nll = L.reconstruction_nll(x, out, "bernoulli")[0]
            log_q = jnp.sum(-0.5 * ((z - mean) ** 2 / jnp.exp(logvar) + logvar + math.log(2 * math.pi)))
            log_p = jnp.sum(-0.5 * (z ** 2 + math.log(2 * math.pi)))
            return nll, nll + log_q - log_p

        nll, mc = jax.vmap(one)(jax.random.split(key, num))
        return nll, mc, jnp.sum(L.kl_to_standard_normal(mean, logvar))

    nll, mc, kl = map(np.asarray, estimates(params, jax.random.PRNGKey(5)))
    analytic = float(np.mean(nll)) + float(kl)
    stderr = float(np.std(mc)) / math.sqrt(len(mc))
    assert abs(float(np.mean(mc)) - analytic) < 4 * stderr + 1e-3


@pytest.mark.parametrize("name", ["flowers64", "flowers256"])
@pytest.mark.parametrize("preset", ["", "tiny"])
def test_vae_configs_load_and_build(name, preset):
    c = importlib.import_module(f"configs.vae.{name}").get_config(preset)
    assert c.is_locked and c.model.name == "vae"
    with pytest.raises(AttributeError):
        c.loss.betta = 2.0
    model = models.get(c.model.name).from_config(c)
    size = c.data.image_size
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    lab = jax.ShapeDtypeStruct((2,), jnp.int32)
    variables = jax.eval_shape(lambda x, l: model.init({"params": jax.random.PRNGKey(0),
                                                        "latent": jax.random.PRNGKey(1)}, x, l, train=False), x, lab)
    out, aux = jax.eval_shape(lambda v, x, l: model.apply(v, x, l, train=True, rngs={"latent": jax.random.PRNGKey(0)}),
                              variables, x, lab)
    assert out.shape == (2, size, size, 3) and aux["mean"].shape == (2, c.model.latent_dim)
    if not preset:
        assert (c.model.latent_dim, c.optim.lr, c.train.batch_size, c.model.likelihood) == (256, 1e-4, 64, "bernoulli")


def test_bad_model_settings_are_one_line_errors():
    from configs.vae import flowers64
    c = flowers64.get_config("tiny")
    c.model.likelihood = "poisson"
    with pytest.raises(UserError, match="likelihood"):
        models.get("vae").from_config(c)
    c = flowers64.get_config("tiny")
    c.data.image_size = 17
    with pytest.raises(UserError, match="divides data.image_size"):
        models.get("vae").from_config(c)
