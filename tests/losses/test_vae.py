"""The VAE's loss terms against hand computations and analytic expectations."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.losses import vae as L


def test_kl_of_two_gaussians_by_hand():
    # KL(N(0, 1) || N(1, 4)) = 0.5 (log 4 + (1 + 1) / 4 - 1)
    assert float(L.gaussian_kl(0.0, 0.0, 1.0, math.log(4.0))) == pytest.approx(0.5 * (math.log(4) + 0.5 - 1))
    # KL(N(1, 2) || N(0, 1)) = 0.5 (2 + 1 - 1 - log 2)
    assert float(L.kl_to_standard_normal(1.0, math.log(2.0))) == pytest.approx(0.5 * (2 - math.log(2)))
    assert float(L.gaussian_kl(0.3, -0.2, 0.3, -0.2)) == pytest.approx(0.0, abs=1e-7)
    mean, logvar = jnp.array([0.5, -1.0, 2.0]), jnp.array([0.1, -2.0, 1.0])
    np.testing.assert_allclose(L.kl_to_standard_normal(mean, logvar), L.gaussian_kl(mean, logvar, 0.0, 0.0), rtol=1e-6)


def test_kl_matches_a_monte_carlo_estimate():
    mean, logvar = 0.7, math.log(0.3)
    z = mean + math.sqrt(0.3) * np.random.default_rng(0).normal(size=400_000)
    log_q = -0.5 * ((z - mean) ** 2 / 0.3 + math.log(2 * math.pi * 0.3))
    log_p = -0.5 * (z ** 2 + math.log(2 * math.pi))
    assert np.mean(log_q - log_p) == pytest.approx(float(L.kl_to_standard_normal(mean, logvar)), abs=5e-3)


def test_reparameterisation_gradients_are_analytic():
    eps = jax.random.normal(jax.random.PRNGKey(0), (200_000,))
    mean, logvar = 0.4, math.log(0.5)
    # E[z] = mean: d/dmean = 1, d/dlogvar = 0;  E[z^2] = mean^2 + exp(logvar): d/dmean = 2 mean, d/dlogvar = exp(logvar)
    g1 = jax.grad(lambda m, lv: jnp.mean(L.reparameterize(m, lv, eps)), argnums=(0, 1))(mean, logvar)
    g2 = jax.grad(lambda m, lv: jnp.mean(L.reparameterize(m, lv, eps) ** 2), argnums=(0, 1))(mean, logvar)
    assert float(g1[0]) == pytest.approx(1.0) and float(g1[1]) == pytest.approx(0.0, abs=5e-3)
    assert float(g2[0]) == pytest.approx(0.8, abs=5e-3) and float(g2[1]) == pytest.approx(0.5, abs=5e-3)


def test_reconstruction_nll_by_hand():
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    d = 4 * 4 * 3
    # logits 0 -> p = 1/2 for every pixel: BCE = log 2 whatever the target
    np.testing.assert_allclose(L.reconstruction_nll(x, jnp.zeros_like(x), "bernoulli"), [d * math.log(2)] * 2, rtol=1e-6)
    # BCE(p, logit) with p = 1 (x = 1) and logit 2: softplus(-2)
    one = jnp.ones((1, 1, 1, 1))
    assert float(L.reconstruction_nll(one, 2.0 * one, "bernoulli")[0]) == pytest.approx(math.log1p(math.exp(-2)))
    sigma = 0.1
    np.testing.assert_allclose(L.reconstruction_nll(x, x, "gaussian", sigma),
                               [d * (math.log(sigma) + 0.5 * math.log(2 * math.pi))] * 2, rtol=1e-5)
    np.testing.assert_allclose(L.reconstruction_nll(x, x + sigma, "laplace", sigma), [d * (1 + math.log(2 * sigma))] * 2,
                               rtol=1e-5)
    with pytest.raises(UserError, match="likelihood"):
        L.reconstruction_nll(x, x, "poisson")


def test_free_bits_warmup_and_active_units():
    kl = jnp.array([[0.1, 2.0], [0.3, 0.0]])       # per-dimension batch means 0.2 and 1.0
    assert float(L.free_bits_kl(kl, 0.0)) == pytest.approx(1.2)
    assert float(L.free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 1.0)
    assert float(L.warmup_beta(5, 2.0, 10)) == pytest.approx(1.0)
    assert float(L.warmup_beta(50, 2.0, 10)) == pytest.approx(2.0)
    assert float(L.warmup_beta(0, 2.0, 0)) == pytest.approx(2.0)
    means = np.stack([np.linspace(-1, 1, 10), np.full(10, 3.0), 0.01 * np.arange(10)], axis=1)
    assert int(L.active_units(means)) == 1  # variances 0.4, 0, 0.000825
    assert float(L.nats_to_bits_per_dim(0.0)) == pytest.approx(math.log2(127.5))
