"""The diffusion samplers with the exact denoiser of Gaussian data, whose posterior mean is analytic:
x_0 ~ N(mu, diag(s^2)) gives E[x_0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu), and
the probability-flow ODE maps x_T to mu + s (x_T - alpha_T mu) / sqrt(alpha_T^2 s^2 + sigma_T^2)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.losses import diffusion as dl
from vqgan_jax.sampling import diffusion as ds

MU = np.array([1.0, -0.5], np.float32)  # numpy: the tests' host arithmetic would compile op by op
S = np.array([0.6, 1.3], np.float32)
SCHED = dl.cosine_schedule(1000)


def gaussian_denoiser(mu, s, schedule=SCHED, traces=None):
    def denoise(x, t):
        if traces is not None:
            traces.append(1)
        alpha, sigma = schedule.coefficients(jnp.full((x.shape[0],), t))
        a, sg = alpha[:, None], sigma[:, None]
        x0 = mu + a * s ** 2 / (a ** 2 * s ** 2 + sg ** 2) * (x - a * mu)
        return x0, (x - a * x0) / sg
    return denoise


def exact_ode(x_T, mu=MU, s=S, schedule=SCHED):
    ab = schedule.alpha_bar[-1]
    return mu + s * (x_T - np.sqrt(ab) * mu) / np.sqrt(ab * s ** 2 + 1 - ab)


@pytest.fixture(scope="module")
def noise():
    return np.asarray(jax.random.normal(jax.random.PRNGKey(0), (20000, 2)))  # numpy: slicing it compiles nothing


@functools.partial(jax.jit, static_argnames=("sampler", "steps"))
def _sample(x_T, rng, eta, mu, s, *, sampler, steps):
    """Compiled once per (sampler, steps, shape): eta and the data parameters are traced."""
    return ds.sample(gaussian_denoiser(mu, s), SCHED, x_T, rng, sampler=sampler, steps=steps, eta=eta)


def run(sampler, steps, x_T, seed=1, eta=0.0, mu=MU, s=S):
    return np.asarray(_sample(x_T, jax.random.PRNGKey(seed), eta, mu, s, sampler=sampler, steps=steps))


def test_timesteps_descend_from_the_last_to_zero():
    np.testing.assert_array_equal(ds.timesteps(1000, 4), [999, 666, 333, 0])
    np.testing.assert_array_equal(ds.timesteps(10, 1), [9])
    for bad in (0, 1001):
        with pytest.raises(UserError, match="steps"):
            ds.timesteps(1000, bad)


def test_one_ddim_step_is_the_posterior_mean(noise):
    """steps=1 goes from t=T-1 straight to the data: x_0 = E[x_0 | x_T], by hand."""
    x = run("ddim", 1, noise[:8])
    ab = SCHED.alpha_bar[-1]
    want = MU + np.sqrt(ab) * S ** 2 / (ab * S ** 2 + 1 - ab) * (noise[:8] - np.sqrt(ab) * MU)
    np.testing.assert_allclose(x, want, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp2m", "ddpm"])
def test_a_point_mass_is_hit_exactly(sampler, noise):
    """Data that is one point: every step predicts it, so the samplers land on it whatever the steps."""
    x = run(sampler, 7, noise[:64], s=np.zeros(2, np.float32))
    np.testing.assert_allclose(x, np.broadcast_to(MU, x.shape), atol=1e-4)


@pytest.mark.parametrize("sampler,steps,tol", [("ddim", 100, 0.015), ("dpmpp2m", 25, 0.02), ("dpmpp2m", 50, 0.005)])
def test_deterministic_samplers_follow_the_probability_flow(sampler, steps, tol, noise):
    """Mean absolute distance to the exact ODE solution from the same noise (measured: ddim 100 steps
    0.010, dpmpp2m 25 steps 0.014 where ddim has 0.040, dpmpp2m 50 steps 0.003)."""
    x = run(sampler, steps, noise)
    assert np.abs(x - exact_ode(np.asarray(noise))).mean() < tol


def test_dpmpp2m_is_second_order_where_ddim_is_first(noise):
    """Doubling the steps from 50 to 100: DDIM's error halves, DPM-Solver++(2M)'s drops by more than 3x,
    and at 100 steps it is several times more accurate."""
    exact = exact_ode(np.asarray(noise))
    err = {(s, n): np.abs(run(s, n, noise) - exact).max() for s in ("ddim", "dpmpp2m") for n in (50, 100)}
    assert 1.6 < err["ddim", 50] / err["ddim", 100] < 2.5
    assert err["dpmpp2m", 50] / err["dpmpp2m", 100] > 3.0
    assert err["dpmpp2m", 100] < err["ddim", 100] / 3


@pytest.mark.parametrize("sampler,steps,eta", [("ddpm", 200, 0.0), ("ddim", 200, 1.0), ("ddim", 100, 0.0),
                                               ("dpmpp2m", 25, 0.0)])
def test_samplers_reproduce_the_data_mean_and_variance(sampler, steps, eta, noise):
    x = run(sampler, steps, noise, eta=eta)
    np.testing.assert_allclose(x.mean(0), MU, atol=0.03)
    np.testing.assert_allclose(x.std(0), S, rtol=0.05)


def test_ddim_with_eta_one_is_ddpm(noise):
    """eta = 1 gives DDIM the posterior's variance, and its mean is the posterior mean: the same draws."""
    np.testing.assert_allclose(run("ddim", 20, noise[:256], eta=1.0), run("ddpm", 20, noise[:256]), atol=1e-4)


def test_same_seed_same_samples_other_seed_other_samples(noise):
    a, b = run("ddpm", 10, noise[:16], seed=3), run("ddpm", 10, noise[:16], seed=3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - run("ddpm", 10, noise[:16], seed=4)).max() > 1e-2
    # eta 0 ignores the key
    np.testing.assert_array_equal(run("ddim", 10, noise[:16], seed=3), run("ddim", 10, noise[:16], seed=4))


def test_ddim_inverts_back_to_its_noise(noise):
    d = gaussian_denoiser(MU, S)
    x_T = noise[:256]
    x0 = jax.jit(lambda x: ds.ddim(d, SCHED, x, None, steps=200))(x_T)
    back = jax.jit(lambda x: ds.ddim_invert(d, SCHED, x, steps=200))(x0)
    np.testing.assert_allclose(back, x_T, atol=0.05)
    assert np.abs(np.asarray(x0) - np.asarray(x_T)).max() > 0.5  # it did go somewhere


def test_no_recompilation_across_calls(noise):
    """One trace per (sampler, steps): new noise, keys, eta and data parameters reuse the program."""
    traces = []

    @jax.jit
    def f(x, key, eta, mu):
        return ds.ddim(gaussian_denoiser(mu, S, traces=traces), SCHED, x, key, steps=5, eta=eta)

    for i in range(3):
        f(noise[:8] + i, jax.random.PRNGKey(i), 0.5 * i, MU + i).block_until_ready()
    assert len(traces) == 1       # the scan traces its body once


def test_cfg_combination_and_one_batched_forward():
    calls = []

    def apply(x, t, labels):
        calls.append(x.shape[0])
        # "conditional" output = label, "unconditional" (null = 9) = 0.5, whatever x is
        return jnp.broadcast_to(jnp.where(labels == 9, 0.5, labels.astype(jnp.float32))[:, None], x.shape)

    np.testing.assert_allclose(ds.cfg_combine(jnp.array(2.0), jnp.array(0.5), 3.0), 0.5 + 3 * 1.5)
    labels = jnp.array([1, 2, 3])
    d = ds.model_denoiser(apply, "eps", SCHED, labels=labels, null_label=9, cfg_scale=3.0)
    x = np.zeros((3, 2), np.float32)
    _, eps = jax.jit(d)(x, jnp.int32(500))  # one compile (eager, each op compiles); apply runs as it traces
    np.testing.assert_allclose(eps[:, 0], 0.5 + 3.0 * (np.array([1, 2, 3]) - 0.5))
    assert calls == [6]           # cond and uncond in one forward of twice the batch
    _, eps = jax.jit(ds.model_denoiser(apply, "eps", SCHED, labels=labels))(x, jnp.int32(500))
    np.testing.assert_allclose(eps[:, 0], [1, 2, 3])


def test_unknown_sampler_is_a_user_error(noise):
    with pytest.raises(UserError, match="sampler"):
        ds.sample(gaussian_denoiser(MU, S), SCHED, noise[:2], jax.random.PRNGKey(0), sampler="euler", steps=3)
