"""The VAE's loss terms, pure functions of arrays: reconstruction negative log-likelihoods, the KL divergence
of diagonal Gaussians, free bits, the KL warm-up, and the count of active latent units.

Convention (the reference study's and Kingma & Welling's): per image, terms are SUMMED over pixels and
latent dimensions; the batch loss is their MEAN over images. The negative ELBO per image is
    nll(x | z) + KL(q(z | x) || N(0, I)),
and the training loss is nll + beta * KL (beta warmed up, optionally with free bits).
"""
import math

import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def gaussian_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) per element, float32 of the broadcast shape:
        0.5 * (logvar2 - logvar1 + (exp(logvar1) + (mean1 - mean2)^2) / exp(logvar2) - 1)."""
    mean1, logvar1, mean2, logvar2 = map(_f32, (mean1, logvar1, mean2, logvar2))
    return 0.5 * (logvar2 - logvar1 + (jnp.exp(logvar1) + jnp.square(mean1 - mean2)) * jnp.exp(-logvar2) - 1.0)


def kl_to_standard_normal(mean, logvar):
    """KL(N(mean, exp(logvar)) || N(0, 1)) per element: 0.5 * (mean^2 + exp(logvar) - 1 - logvar), float32."""
    mean, logvar = _f32(mean), _f32(logvar)
    return 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)


def reparameterize(mean, logvar, eps):
    """z = mean + exp(logvar / 2) * eps: a sample of N(mean, exp(logvar)) differentiable in mean and logvar."""
    return _f32(mean) + jnp.exp(0.5 * _f32(logvar)) * _f32(eps)


def reconstruction_nll(x, out, likelihood: str, sigma: float = 0.1):
    """-log p(x | z) per image, summed over pixels: float32 (B,).

    x: float (B, H, W, C) targets in [-1, 1]; out: the decoder's raw output of the same shape.
      bernoulli  binary cross-entropy of p = (x + 1) / 2 against logits `out`: softplus(out) - p * out
                 (the reference's loss; with grey-level targets it is not a normalised density)
      gaussian   0.5 ((x - out) / sigma)^2 + log(sigma) + 0.5 log(2 pi)        (an L2 loss)
      laplace    |x - out| / sigma + log(2 sigma)                               (an L1 loss)
    sigma: the fixed scale of the Gaussian / Laplace likelihood, on the [-1, 1] pixel scale.
    """
    x, out = _f32(x), _f32(out)
    if likelihood == "bernoulli":
        per = jax.nn.softplus(out) - (x + 1.0) / 2.0 * out
    elif likelihood == "gaussian":
        per = 0.5 * jnp.square((x - out) / sigma) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
    elif likelihood == "laplace":
        per = jnp.abs(x - out) / sigma + math.log(2 * sigma)
    else:
        raise UserError(f"unknown likelihood {likelihood!r}: use bernoulli, gaussian or laplace")
    return per.reshape(per.shape[0], -1).sum(axis=1)


def free_bits_kl(kl, free_bits: float):
    """The KL term trained on, float32 (): sum over latent dimensions d of max(mean_b kl[b, d], free_bits)
    (Kingma et al. 2016): a dimension whose KL (averaged over the batch) is under `free_bits` nats costs
    the same as one at it, so the encoder is not pushed to switch it off. free_bits 0: the plain mean
    over images of the KL summed over dimensions. kl: float (B, ...) per element."""
    per_dim = jnp.mean(_f32(kl), axis=0)  # (...) mean over the batch
    if free_bits > 0:
        per_dim = jnp.maximum(per_dim, free_bits)
    return jnp.sum(per_dim)


def warmup_beta(step, beta: float, warmup_steps: int):
    """beta * min(1, step / warmup_steps) as float32 () (KL warm-up; arithmetic, so one compiled step)."""
    if warmup_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    return beta * jnp.minimum(1.0, _f32(step) / warmup_steps)


def active_units(means, threshold: float = 0.01):
    """Latent dimensions whose posterior mean varies across images: count of Var_x(E_q[z_d | x]) > threshold
    (Burda et al. 2016). means: float (N, ...) posterior means of N images. Returns int32 ()."""
    means = _f32(means).reshape(means.shape[0], -1)
    return jnp.sum(jnp.var(means, axis=0) > threshold).astype(jnp.int32)


def nats_to_bits_per_dim(nats_per_dim):
    """Negative log-likelihood in nats per dimension of a density on the [-1, 1] pixel scale -> bits per
    dimension on the usual [0, 256) scale: (nats + log 127.5) / log 2 (the change of scale's Jacobian)."""
    return (nats_per_dim + math.log(127.5)) / math.log(2.0)
