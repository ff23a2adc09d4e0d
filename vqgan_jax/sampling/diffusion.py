"""Diffusion samplers, each one `lax.scan` over precomputed per-step coefficients.

Every sampler takes a callback `denoise(x, t) -> (x0_hat, eps_hat)` (x float32 (B, ...), t an int32
scalar timestep of the training schedule) and knows nothing of networks, latents or guidance, so the
tests drive them with the exact denoiser of Gaussian data and any model plugs in through
`model_denoiser` (+ `guided` for classifier-free guidance).

The number of steps is a Python int: it fixes the timestep sequence and the coefficient arrays, which
are computed once on the host in float64 (`_plan`) and enter the scan as constants. Wrap a sampler in
one `jax.jit` with the steps static (see `sampling.latent_diffusion`); new noise, weights, labels, eta or
guidance scale then reuse the compiled program.

    ddpm     ancestral sampling from the posterior q(x_s | x_t, x0_hat) on the strided sequence
    ddim     DDIM (Song et al. 2021) with eta: 0 deterministic, 1 = ddpm's variance
    dpmpp2m  DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in x0; first order at the ends
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.losses import diffusion as dl

SAMPLERS = ("ddpm", "ddim", "dpmpp2m")
Denoise = Callable[[jax.Array, jax.Array], tuple]


def timesteps(num_train: int, steps: int) -> np.ndarray:
    """The `steps` timesteps visited, int32 descending from T-1 to 0 evenly ("trailing" spacing, so the
    first step starts from pure noise's timestep)."""
    if not 1 <= steps <= num_train:
        raise UserError(f"steps must be between 1 and the {num_train} training timesteps, got {steps}")
    return np.round(np.linspace(num_train - 1, 0, steps)).astype(np.int32)


def _plan(schedule: dl.Schedule, steps: int) -> dict:
    """Per-step float64 arrays (steps,) for a move t -> s (s the next timestep; alpha_bar_s = 1 after t=0)."""
    t = timesteps(schedule.num_steps, steps)
    ab_t = schedule.alpha_bar[t]
    ab_s = np.concatenate([schedule.alpha_bar[t[1:]], [1.0]])
    return {"t": t, "ab_t": ab_t, "ab_s": ab_s}


def _noise_scan(body, x, coefs: dict, rng: jax.Array):
    """lax.scan of body(x, coefs_i, key_i) -> x over the steps; returns the final x."""
    n = len(coefs["t"])
    keys = jax.random.split(jax.random.PRNGKey(0) if rng is None else rng, n)  # None: eta 0 draws nothing
    xs = {k: jnp.asarray(v, jnp.int32 if k == "t" else jnp.float32) for k, v in coefs.items()}
    x, _ = jax.lax.scan(lambda x, c: (body(x, c[0], c[1]), None), x, (xs, keys))
    return x


def ddpm(denoise: Denoise, schedule: dl.Schedule, x_T: jax.Array, rng: jax.Array, *, steps: int) -> jax.Array:
    """Ancestral sampling: x_s ~ q(x_s | x_t, x_0 = x0_hat), the Gaussian posterior of the forward process
    between the two visited timesteps. x_T: float32 (B, ...) standard normal; returns x_0 (B, ...)."""
    p = _plan(schedule, steps)
    alpha_ts = p["ab_t"] / p["ab_s"]                           # alpha_bar_t / alpha_bar_s
    beta_ts = 1.0 - alpha_ts
    coefs = {"t": p["t"],
             "c0": np.sqrt(p["ab_s"]) * beta_ts / (1.0 - p["ab_t"]),      # weight of x0_hat in the mean
             "ct": np.sqrt(alpha_ts) * (1.0 - p["ab_s"]) / (1.0 - p["ab_t"]),  # weight of x_t
             "std": np.sqrt(beta_ts * (1.0 - p["ab_s"]) / (1.0 - p["ab_t"]))}  # 0 at the last step

    def body(x, c, key):
        x0, _ = denoise(x, c["t"])
        return c["c0"] * x0 + c["ct"] * x + c["std"] * jax.random.normal(key, x.shape, x.dtype)

    return _noise_scan(body, x_T, coefs, rng)


def ddim(denoise: Denoise, schedule: dl.Schedule, x_T: jax.Array, rng: jax.Array | None, *, steps: int,
         eta: float | jax.Array = 0.0) -> jax.Array:
    """DDIM: x_s = sqrt(ab_s) x0_hat + sqrt(1 - ab_s - sigma^2) eps_hat + sigma z, with
    sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s). eta may be traced (no recompile)."""
    p = _plan(schedule, steps)
    coefs = {"t": p["t"], "a_s": np.sqrt(p["ab_s"]), "var_s": 1.0 - p["ab_s"],
             "ddpm_std": np.sqrt((1.0 - p["ab_s"]) / (1.0 - p["ab_t"]) * (1.0 - p["ab_t"] / p["ab_s"]))}
    eta = jnp.asarray(eta, jnp.float32)

    def body(x, c, key):
        x0, eps = denoise(x, c["t"])
        sig = eta * c["ddpm_std"]
        dir_coef = jnp.sqrt(jnp.maximum(c["var_s"] - sig ** 2, 0.0))
        return c["a_s"] * x0 + dir_coef * eps + sig * jax.random.normal(key, x.shape, x.dtype)

    return _noise_scan(body, x_T, coefs, rng)


def dpmpp2m(denoise: Denoise, schedule: dl.Schedule, x_T: jax.Array, rng: jax.Array | None = None, *,
            steps: int) -> jax.Array:
    """DPM-Solver++(2M), deterministic. With lambda = log(alpha / sigma) and h = lambda_s - lambda_t:
    x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^-h) D, where D = x0_hat on the first step (no history)
    and on the last (to sigma = 0, where h is infinite: x_0 = x0_hat), else
    D = (1 + 1/(2r)) x0_hat - 1/(2r) x0_prev with r = h_prev / h."""
    del rng  # deterministic; the argument keeps the samplers' signatures alike
    p = _plan(schedule, steps)
    n = len(p["t"])
    a_t, s_t = np.sqrt(p["ab_t"]), np.sqrt(1.0 - p["ab_t"])
    a_s, s_s = np.sqrt(p["ab_s"]), np.sqrt(1.0 - p["ab_s"])
    lam_t = np.log(a_t / s_t)
    lam_s = np.concatenate([lam_t[1:], [np.inf]])
    h = lam_s - lam_t
    c_x = np.where(np.isinf(h), 0.0, s_s / s_t)
    c_d = np.where(np.isinf(h), 1.0, a_s * -np.expm1(-np.where(np.isinf(h), 0.0, h)))
    second = np.zeros(n, bool)
    second[1:n - 1] = True                     # history exists and the step is finite
    r = np.ones(n)
    r[1:] = h[:-1] / np.where(np.isinf(h[1:]), 1.0, h[1:])
    w_prev = np.where(second, -1.0 / (2.0 * r), 0.0)
    coefs = {"t": p["t"], "c_x": c_x, "c_d": c_d, "w_cur": 1.0 - w_prev, "w_prev": w_prev}
    xs = {k: jnp.asarray(v, jnp.int32 if k == "t" else jnp.float32) for k, v in coefs.items()}

    def body(carry, c):
        x, x0_prev = carry
        x0, _ = denoise(x, c["t"])
        d = c["w_cur"] * x0 + c["w_prev"] * x0_prev
        return (c["c_x"] * x + c["c_d"] * d, x0), None

    (x, _), _ = jax.lax.scan(body, (x_T, jnp.zeros_like(x_T)), xs)
    return x


def sample(denoise: Denoise, schedule: dl.Schedule, x_T: jax.Array, rng: jax.Array, *, sampler: str,
           steps: int, eta: float | jax.Array = 0.0) -> jax.Array:
    """x_0 (B, ...) from noise x_T (B, ...) with the named sampler ('ddpm' | 'ddim' | 'dpmpp2m');
    eta is used by ddim only."""
    if sampler == "ddpm":
        return ddpm(denoise, schedule, x_T, rng, steps=steps)
    if sampler == "ddim":
        return ddim(denoise, schedule, x_T, rng, steps=steps, eta=eta)
    if sampler == "dpmpp2m":
        return dpmpp2m(denoise, schedule, x_T, rng, steps=steps)
    raise UserError(f"unknown sampler {sampler!r}: use one of {', '.join(SAMPLERS)}")


def ddim_invert(denoise: Denoise, schedule: dl.Schedule, x0: jax.Array, *, steps: int) -> jax.Array:
    """Deterministic DDIM run backwards (x_0 -> x_T) over the same timesteps as `ddim(steps)`: each move
    s -> t reuses the denoiser's estimate at the lower timestep, the usual first-order inversion.
    Returns x_T (B, ...); `ddim(eta=0)` maps it back to about x0."""
    t = timesteps(schedule.num_steps, steps)[::-1].copy()           # ascending
    t_from = np.concatenate([[t[0]], t[:-1]])                       # where the estimate is taken
    ab_from = np.concatenate([[1.0], schedule.alpha_bar[t[:-1]]])
    xs = {"t": jnp.asarray(t_from, jnp.int32), "a_to": jnp.asarray(np.sqrt(schedule.alpha_bar[t]), jnp.float32),
          "s_to": jnp.asarray(np.sqrt(1.0 - schedule.alpha_bar[t]), jnp.float32),
          "a_from": jnp.asarray(np.sqrt(ab_from), jnp.float32),
          "s_from": jnp.asarray(np.sqrt(1.0 - ab_from), jnp.float32)}

    def body(x, c):
        _, eps = denoise(x, c["t"])
        x0_hat = (x - c["s_from"] * eps) / c["a_from"]
        return c["a_to"] * x0_hat + c["s_to"] * eps, None

    x, _ = jax.lax.scan(body, x0, xs)
    return x


def cfg_combine(cond: jax.Array, uncond: jax.Array, scale: float | jax.Array) -> jax.Array:
    """Classifier-free guidance: uncond + scale (cond - uncond) (scale 1 = the conditional model)."""
    return uncond + scale * (cond - uncond)


def model_denoiser(apply: Callable, objective: str, schedule: dl.Schedule, *, labels: jax.Array | None = None,
                   null_label: int | None = None, cfg_scale: float | jax.Array | None = None) -> Denoise:
    """A `denoise(x, t)` from a network `apply(x, t (B,), labels (B,) | None) -> output (B, ...)`.

    With cfg_scale (not None), labels and null_label: classifier-free guidance in one batched forward,
    [x, x] with [labels, null] -> the two outputs combined by `cfg_combine` before the conversion to
    (x0, eps) (every parameterisation is linear in the output).
    """
    dl.check_objective(objective)

    def denoise(x, t):
        b = x.shape[0]
        tb = jnp.full((b,), t, jnp.int32)
        alpha, sigma = schedule.coefficients(tb)
        if cfg_scale is None or labels is None:
            out = apply(x, tb, labels)
        else:
            both = apply(jnp.concatenate([x, x]), jnp.concatenate([tb, tb]),
                         jnp.concatenate([labels, jnp.full_like(labels, null_label)]))
            out = cfg_combine(both[:b], both[b:], cfg_scale)
        return dl.predict_x0_eps(objective, out.astype(jnp.float32), x, alpha, sigma)

    return denoise
