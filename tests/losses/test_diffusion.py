"""Diffusion maths: schedules against their closed forms, the forward process, the eps / v conversions and
the min-SNR weights (hand computations)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.losses import diffusion as dl


@pytest.mark.parametrize("name", ["linear", "cosine", "shifted_cosine"])
def test_schedules_are_monotone_in_0_1(name):
    s = dl.make_schedule(name, 1000, 2.0)
    ab = s.alpha_bar
    assert ab.shape == (1000,) and np.all(np.diff(ab) < 0) and ab[0] < 1 and ab[-1] > 0
    assert np.all(np.diff(s.log_snr) < 0)
    assert np.all((s.betas > 0) & (s.betas < 1))
    np.testing.assert_allclose(np.cumprod(1 - s.betas), ab, rtol=1e-12)


def test_linear_schedule_endpoints_by_hand():
    s = dl.linear_schedule(1000)
    assert s.alpha_bar[0] == pytest.approx(1 - 1e-4)
    assert s.betas[-1] == pytest.approx(0.02)
    # prod(1 - beta) with betas linear in [1e-4, 0.02] over 1000 steps: DDPM's alpha_bar_T ~ 4.04e-5
    assert s.alpha_bar[-1] == pytest.approx(4.0358e-5, rel=1e-3)


def test_cosine_schedule_closed_form():
    s = dl.cosine_schedule(1000)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 250, 500, 900):
        assert s.alpha_bar[t] == pytest.approx(f((t + 1) / 1000) / f(0), rel=1e-9)


def test_shift_divides_the_snr():
    base = dl.cosine_schedule(100)
    shifted = dl.shifted_schedule(base, 2.0)
    np.testing.assert_allclose(shifted.snr, base.snr / 4.0, rtol=1e-10)
    np.testing.assert_allclose(dl.shifted_schedule(base, 1.0).alpha_bar, base.alpha_bar, rtol=1e-12)


def test_bad_schedule_names_are_user_errors():
    with pytest.raises(UserError, match="schedule"):
        dl.make_schedule("quadratic", 1000)
    with pytest.raises(UserError, match="objective"):
        dl.check_objective("x0")


def test_forward_process_matches_its_closed_form():
    """q(x_t | x_0) = N(sqrt(ab_t) x_0, (1 - ab_t) I): sample moments at three timesteps."""
    s = dl.cosine_schedule(1000)
    x0 = jnp.full((50000, 1), 0.7)
    for t in (10, 500, 990):
        alpha, sigma = s.coefficients(jnp.full((50000,), t))
        xt = dl.q_sample(x0, jax.random.normal(jax.random.PRNGKey(t), x0.shape), alpha, sigma)
        assert float(xt.mean()) == pytest.approx(math.sqrt(s.alpha_bar[t]) * 0.7, abs=0.01)
        assert float(xt.var()) == pytest.approx(1 - s.alpha_bar[t], rel=0.02, abs=1e-4)


def test_v_eps_x0_conversions_are_exact_inverses():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x0 = jax.random.normal(k1, (6, 4, 4, 3))
    eps = jax.random.normal(k2, (6, 4, 4, 3))
    ab = jax.random.uniform(k3, (6,), minval=0.05, maxval=0.95)
    alpha, sigma = jnp.sqrt(ab), jnp.sqrt(1 - ab)
    xt = dl.q_sample(x0, eps, alpha, sigma)
    v = dl.v_from_x0_eps(x0, eps, alpha, sigma)
    for objective, out in (("eps", eps), ("v", v)):
        x0_hat, eps_hat = dl.predict_x0_eps(objective, out, xt, alpha, sigma)
        np.testing.assert_allclose(x0_hat, x0, atol=1e-5)
        np.testing.assert_allclose(eps_hat, eps, atol=1e-5)
        np.testing.assert_allclose(dl.target(objective, x0, eps, alpha, sigma), out, atol=0)
    np.testing.assert_allclose(dl.eps_from_x0(xt, x0, alpha, sigma), eps, atol=1e-5)
    np.testing.assert_allclose(dl.x0_from_eps(xt, eps, alpha, sigma), x0, atol=1e-5)


def test_min_snr_weights_by_hand():
    snr = jnp.array([0.5, 5.0, 50.0])
    np.testing.assert_allclose(dl.min_snr_weight("eps", snr, 5.0), [1.0, 1.0, 0.1], rtol=1e-6)
    np.testing.assert_allclose(dl.min_snr_weight("v", snr, 5.0), [0.5 / 1.5, 5 / 6, 5 / 51], rtol=1e-6)
    np.testing.assert_allclose(dl.min_snr_weight("eps", snr, 0.0), [1, 1, 1])


def test_loss_is_the_weighted_mse():
    x0 = jnp.ones((2, 2, 2, 1))
    eps = jnp.zeros((2, 2, 2, 1))
    out = jnp.stack([jnp.full((2, 2, 1), 1.0), jnp.full((2, 2, 1), 3.0)])   # eps errors 1 and 3
    alpha = jnp.sqrt(jnp.array([0.5, 0.9]))
    sigma = jnp.sqrt(1 - alpha ** 2)
    loss, mse = dl.diffusion_loss("eps", out, x0, eps, alpha, sigma)
    np.testing.assert_allclose(mse, [1.0, 9.0])
    assert float(loss) == pytest.approx(5.0)
    # gamma 1: SNR 1 keeps weight 1, SNR 9 gets 1/9 -> (1 + 9/9) / 2
    loss, _ = dl.diffusion_loss("eps", out, x0, eps, alpha, sigma, min_snr_gamma=1.0)
    assert float(loss) == pytest.approx(1.0, rel=1e-5)
