"""The VAE's reconstruction block of `python -m vqgan_jax.evaluate`: on held-out images, the negative ELBO in
nats and bits per dimension, its KL part, PSNR / SSIM / L1 / LPIPS of the decoded posterior means, and the
number of active latent units.

The ELBO uses one reparameterised sample of z per image (seeded), an unbiased estimate of
    -ELBO = E_q[-log p(x | z)] + KL(q(z | x) || N(0, I)),
reported per dimension (H * W * C). bits_per_dim converts it to the [0, 256) pixel scale
(`losses.vae.nats_to_bits_per_dim`); for the Bernoulli likelihood (BCE on grey levels) it is not a
normalised density, so compare those numbers between runs of one likelihood only.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.eval import image_metrics
from vqgan_jax.losses import vae as vae_loss


@functools.lru_cache(maxsize=4)
def _eval_fn(model, likelihood: str, sigma: float):
    def evaluate(params, x, label, rng):
        out, aux = model.apply({"params": params}, x, label, train=False, rngs={"latent": rng})
        nll = vae_loss.reconstruction_nll(x, out, likelihood, sigma)  # (B,)
        kl = vae_loss.kl_to_standard_normal(aux["mean"], aux["logvar"])
        x_hat = model.apply({"params": params}, x, label, method=type(model).reconstruct)
        return x_hat, nll, jnp.sum(kl.reshape(kl.shape[0], -1), axis=1), aux["mean"]
    return jax.jit(evaluate)


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    return x if len(x) == size else np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def reconstruct_and_score(vae, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 32,
                          seed: int = 0, lpips_fn=None) -> tuple[np.ndarray, dict]:
    """vae: `train.loading.load_vae`'s result. images float32 (N, H, W, C) in [-1, 1], labels int (N,).

    Returns (reconstructions float32 (N, H, W, C) clipped to [-1, 1], metrics dict of Python numbers:
    num_images, psnr, ssim, l1, lpips (None without lpips_fn), rec_nll (nats per image), kl (nats per
    image), neg_elbo_nats_per_dim, bits_per_dim, active_units, latent_dims).
    lpips_fn: (x, y) -> float (N,) distances, e.g. `eval.suite.lpips_distances`.
    """
    cfg = vae.config
    fn = _eval_fn(vae.model, str(cfg.model.likelihood), float(cfg.loss.sigma))
    labels = np.asarray(labels, np.int32)
    if vae.model.num_classes == 0:
        labels = np.zeros_like(labels)
    key = jax.random.PRNGKey(seed)
    recs, nll, kl, means = [], [], [], []
    for i, s in enumerate(range(0, len(images), batch_size)):
        n = len(images[s:s + batch_size])
        out = jax.device_get(fn(vae.variables["params"], _pad(images[s:s + batch_size], batch_size),
                                _pad(labels[s:s + batch_size], batch_size), jax.random.fold_in(key, i)))
        recs.append(np.clip(np.asarray(out[0], np.float32), -1, 1)[:n])
        nll.append(np.asarray(out[1])[:n])
        kl.append(np.asarray(out[2])[:n])
        means.append(np.asarray(out[3])[:n])
    recs, nll, kl, means = map(np.concatenate, (recs, nll, kl, means))
    dims = int(np.prod(images.shape[1:]))
    nats = float(np.mean(nll + kl)) / dims
    metrics = {"num_images": int(len(images)),
               "psnr": float(np.mean(np.minimum(image_metrics.psnr(images, recs), 100.0))),
               "ssim": float(np.mean(image_metrics.ssim(images, recs))),
               "l1": float(np.mean(image_metrics.l1(images, recs))),
               "lpips": float(np.mean(lpips_fn(images, recs))) if lpips_fn is not None else None,
               "rec_nll": float(np.mean(nll)), "kl": float(np.mean(kl)), "neg_elbo_nats_per_dim": nats,
               "bits_per_dim": float(vae_loss.nats_to_bits_per_dim(nats)),
               "active_units": int(vae_loss.active_units(means)), "latent_dims": int(np.prod(means.shape[1:]))}
    return recs, metrics

