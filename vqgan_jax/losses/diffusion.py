"""Diffusion maths: noise schedules, the forward process, the epsilon / v parameterisations and the loss.

Discrete-time variance-preserving diffusion (DDPM) with T training timesteps t = 0 .. T-1:

    x_t = alpha_t * x_0 + sigma_t * eps,   alpha_t = sqrt(alpha_bar_t),  sigma_t = sqrt(1 - alpha_bar_t)

so alpha_t**2 + sigma_t**2 = 1 and SNR(t) = alpha_t**2 / sigma_t**2 falls monotonically with t. A
`Schedule` holds alpha_bar as float64 numpy (the samplers precompute their per-step coefficients from it
on the host); `coefficients(t)` gathers alpha_t, sigma_t for a batch of timesteps inside jit.

Parameterisations (all linear in the network output, so classifier-free guidance can combine outputs):
    eps:  the network predicts eps;  x_0 = (x_t - sigma eps) / alpha
    v:    the network predicts v = alpha eps - sigma x_0 (Salimans & Ho 2022);
          x_0 = alpha x_t - sigma v,  eps = sigma x_t + alpha v
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError

OBJECTIVES = ("eps", "v")
SCHEDULES = ("linear", "cosine", "shifted_cosine")


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """alpha_bar: float64 numpy (T,), strictly decreasing in (0, 1)."""
    alpha_bar: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.alpha_bar)

    @property
    def betas(self) -> np.ndarray:
        """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} (alpha_bar_{-1} = 1), float64 (T,)."""
        return 1.0 - self.alpha_bar / np.concatenate([[1.0], self.alpha_bar[:-1]])

    @property
    def snr(self) -> np.ndarray:
        return self.alpha_bar / (1.0 - self.alpha_bar)

    @property
    def log_snr(self) -> np.ndarray:
        return np.log(self.snr)

    def coefficients(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
        """t: int (B,) timesteps -> (alpha_t, sigma_t), float32 (B,)."""
        ab = jnp.asarray(self.alpha_bar, jnp.float32)[t]
        return jnp.sqrt(ab), jnp.sqrt(1.0 - ab)


def linear_schedule(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """DDPM's betas, linear in t from beta_start to beta_end (Ho et al. 2020, at T = 1000)."""
    betas = np.linspace(beta_start, beta_end, num_steps, dtype=np.float64)
    return Schedule(np.cumprod(1.0 - betas))


def cosine_schedule(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal's cosine: alpha_bar(u) = f(u) / f(0), f(u) = cos((u + s) / (1 + s) * pi / 2)**2 with
    u = (t + 1) / T, betas clipped at max_beta (so alpha_bar at t = T-1 is tiny but not zero)."""
    u = np.arange(num_steps + 1, dtype=np.float64) / num_steps
    f = np.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, max_beta)
    return Schedule(np.cumprod(1.0 - betas))


def shifted_schedule(base: Schedule, shift: float) -> Schedule:
    """The base schedule with its SNR divided by shift**2 at every t (log-SNR moved by -2 log shift, as
    Hoogeboom et al.'s simple diffusion and SD3 shift for larger latents): shift > 1 spends more steps at
    high noise."""
    snr = base.snr / shift ** 2
    return Schedule(snr / (1.0 + snr))


def make_schedule(name: str, num_steps: int, shift: float = 1.0) -> Schedule:
    """The schedule a config names: 'linear' | 'cosine' | 'shifted_cosine' (with `shift`)."""
    if num_steps < 2:
        raise UserError(f"diffusion.train_steps must be at least 2, got {num_steps}")
    if name == "linear":
        return linear_schedule(num_steps)
    if name == "cosine":
        return cosine_schedule(num_steps)
    if name == "shifted_cosine":
        if shift <= 0:
            raise UserError(f"diffusion.schedule_shift must be positive, got {shift}")
        return shifted_schedule(cosine_schedule(num_steps), shift)
    raise UserError(f"unknown diffusion.schedule {name!r}: use one of {', '.join(SCHEDULES)}")


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise UserError(f"unknown diffusion.objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    return objective


def _bcast(c: jax.Array, x: jax.Array) -> jax.Array:
    """A per-example coefficient (B,) or scalar, shaped to broadcast against x (B, ...)."""
    c = jnp.asarray(c, x.dtype)
    return c.reshape(c.shape + (1,) * (x.ndim - c.ndim))


def q_sample(x0: jax.Array, eps: jax.Array, alpha: jax.Array, sigma: jax.Array) -> jax.Array:
    """The forward process: x_t = alpha x_0 + sigma eps. x0, eps (B, ...); alpha, sigma (B,)."""
    return _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * eps


def v_from_x0_eps(x0, eps, alpha, sigma):
    """v = alpha eps - sigma x_0."""
    return _bcast(alpha, x0) * eps - _bcast(sigma, x0) * x0


def x0_eps_from_v(x_t, v, alpha, sigma):
    """(x_0, eps) = (alpha x_t - sigma v, sigma x_t + alpha v)."""
    a, s = _bcast(alpha, x_t), _bcast(sigma, x_t)
    return a * x_t - s * v, s * x_t + a * v


def x0_from_eps(x_t, eps, alpha, sigma):
    """x_0 = (x_t - sigma eps) / alpha."""
    return (x_t - _bcast(sigma, x_t) * eps) / _bcast(alpha, x_t)


def eps_from_x0(x_t, x0, alpha, sigma):
    """eps = (x_t - alpha x_0) / sigma."""
    return (x_t - _bcast(alpha, x_t) * x0) / _bcast(sigma, x_t)


def predict_x0_eps(objective: str, out: jax.Array, x_t: jax.Array, alpha, sigma) -> tuple[jax.Array, jax.Array]:
    """The network output `out` (B, ...) under `objective` -> (x_0 estimate, eps estimate), both (B, ...)."""
    if objective == "eps":
        return x0_from_eps(x_t, out, alpha, sigma), out
    if objective == "v":
        return x0_eps_from_v(x_t, out, alpha, sigma)
    raise UserError(f"unknown diffusion.objective {objective!r}: use one of {', '.join(OBJECTIVES)}")


def target(objective: str, x0: jax.Array, eps: jax.Array, alpha, sigma) -> jax.Array:
    """What the network regresses onto: eps, or v."""
    return eps if objective == "eps" else v_from_x0_eps(x0, eps, alpha, sigma)


def min_snr_weight(objective: str, snr: jax.Array, gamma: float) -> jax.Array:
    """Min-SNR-gamma loss weights (Hang et al. 2023), float32 (B,); gamma <= 0 gives ones.

    The x_0-space weight min(SNR, gamma) written for the target the network predicts: divided by SNR for
    eps (||eps - eps_hat||^2 = SNR ||x_0 - x_0_hat||^2) and by SNR + 1 for v.
    """
    if gamma <= 0:
        return jnp.ones_like(snr)
    clipped = jnp.minimum(snr, gamma)
    return clipped / snr if objective == "eps" else clipped / (snr + 1.0)


def diffusion_loss(objective: str, out: jax.Array, x0: jax.Array, eps: jax.Array, alpha: jax.Array,
                   sigma: jax.Array, *, min_snr_gamma: float = 0.0) -> tuple[jax.Array, jax.Array]:
    """Weighted mean squared error of the network output against its target.

    out, x0, eps: (B, ...); alpha, sigma: float32 (B,). Returns (loss scalar float32, per-example
    unweighted mse float32 (B,)) (the latter for logging by timestep).
    """
    tgt = target(objective, x0, eps, alpha, sigma)
    mse = jnp.mean(jnp.square(out.astype(jnp.float32) - tgt.astype(jnp.float32)),
                   axis=tuple(range(1, out.ndim)))                                          # (B,)
    w = min_snr_weight(objective, jnp.square(alpha) / jnp.square(sigma), min_snr_gamma)
    return jnp.mean(w * mse), mse
