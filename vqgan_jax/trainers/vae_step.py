"""The VAE's train step: one pure function `(state, batch, rng, consts) -> (state, metrics)` after binding the
static pieces with `functools.partial`.

Its pieces follow the VQGAN step (`trainers.vqgan_step`): ONE forward of the VAE under `jax.vjp` giving the
decoder's raw output and the (free-bits) KL term; the reconstruction (+ LPIPS) gradient wrt the output; for
the VAE-GAN the discriminator's gradients from one forward (`vqgan_step.discriminator_gradients`) and
taming's adaptive weight at the decoder's last conv; then ONE backward pass with the combined cotangent
(output: rec + w * adv, KL term: beta). beta's warm-up and the discriminator's start are arithmetic on
the step, so one program serves every step.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from vqgan_jax.losses import gan
from vqgan_jax.losses import vae as vae_loss
from vqgan_jax.models.vae import output_to_image
from vqgan_jax.trainers.vqgan_step import LossSettings as GANSettings, discriminator_gradients


@flax.struct.dataclass
class VAEState:
    """step int32 (); params / opt: the VAE and its Adam state; ema_params: EMA of params (a copy when EMA
    is off, never read then); d_params / d_opt: the VAE-GAN's discriminator ({} without one); lecam: unused
    zeros, so the VQGAN's discriminator code reads this state as it reads its own."""
    step: jax.Array
    params: Any
    opt: Any
    ema_params: Any
    d_params: Any
    d_opt: Any
    lecam: Any


@dataclasses.dataclass(frozen=True)
class VAELoss:
    """Static loss settings from config.loss (and model.likelihood)."""
    likelihood: str = "bernoulli"
    sigma: float = 0.1
    beta: float = 1.0
    kl_warmup_steps: int = 0
    free_bits: float = 0.0
    perceptual_weight: float = 0.0
    disc_weight: float = 0.0
    disc_start: int = 0
    disc_loss: str = "hinge"
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4

    @classmethod
    def from_config(cls, config) -> "VAELoss":
        names = {f.name for f in dataclasses.fields(cls)} - {"likelihood"}
        return cls(likelihood=str(config.model.likelihood), **{k: config.loss[k] for k in names})

    @property
    def use_disc(self) -> bool:
        return self.disc_weight > 0

    def gan_settings(self) -> GANSettings:
        return GANSettings(disc_loss=self.disc_loss, disc_weight=self.disc_weight, disc_start=self.disc_start)


def vae_train_step(state: VAEState, batch: dict, rng: jax.Array, consts: Any, *, model, disc, tx, d_tx,
                   loss: VAELoss, lpips_apply: Callable | None, ema_decay: float) -> tuple[VAEState, dict]:
    """One update of the VAE (and of the discriminator of a VAE-GAN).

    batch: {'image': float32 (B, H, W, C) in [-1, 1], 'label': int32 (B,)}, sharded on the batch axis.
    rng: fold_in(seed_key, step). consts: {'lpips': params} when the perceptual term is on.
    Returns the new state and float32 scalars: loss, rec (NLL per image), kl (true KL per image), kl_term
    (the free-bits KL trained on), beta, neg_elbo_per_dim (nats), active_units, perceptual, g/adv, d/loss, ...
    """
    x, label = batch["image"], batch["label"]
    rng_latent, rng_drop = jax.random.split(rng)
    beta = vae_loss.warmup_beta(state.step, loss.beta, loss.kl_warmup_steps)
    disc_on = state.step >= loss.disc_start

    def forward(params):
        out, aux = model.apply({"params": params}, x, label, train=True,
                               rngs={"latent": rng_latent, "dropout": rng_drop})
        kl = vae_loss.kl_to_standard_normal(aux["mean"], aux["logvar"])  # (B, *latent_shape)
        return (out.astype(jnp.float32), vae_loss.free_bits_kl(kl, loss.free_bits)), (aux, kl)

    (out, kl_term), vjp, (aux, kl) = jax.vjp(forward, state.params, has_aux=True)

    def rec_fn(o):
        nll = jnp.mean(vae_loss.reconstruction_nll(x, o, loss.likelihood, loss.sigma))
        p = jnp.zeros((), jnp.float32)
        if loss.perceptual_weight > 0:
            p = jnp.mean(lpips_apply(consts["lpips"], x, output_to_image(o, loss.likelihood)))
        return nll + loss.perceptual_weight * p, (nll, p)

    (rec_total, (nll, perceptual)), g_rec = jax.value_and_grad(rec_fn, has_aux=True)(out)
    zero = jnp.zeros((), jnp.float32)
    d_stats = {"d/loss": zero, "d/logits_real": zero, "d/logits_fake": zero, "g/adv": zero}
    d_weight, cot = zero, g_rec
    d_params, d_opt = state.d_params, state.d_opt
    if loss.use_disc:
        image, image_vjp = jax.vjp(lambda o: output_to_image(o, loss.likelihood), out)
        d_grads, g_adv_image, stats = discriminator_gradients(disc, state, x, image, loss.gan_settings())
        (g_adv,) = image_vjp(g_adv_image)  # adversarial gradient wrt the raw output
        d_stats = {k: jnp.where(disc_on, stats[k], 0.0) for k in d_stats}
        if loss.adaptive_weight:
            kernel = state.params["decoder"]["conv_out"]["kernel"]
            h_last = aux["h_last"].astype(jnp.float32)
            w = gan.adaptive_weight(gan.conv_kernel_grad(h_last, kernel, g_rec),
                                    gan.conv_kernel_grad(h_last, kernel, g_adv), loss.disc_weight,
                                    loss.adaptive_weight_max)
        else:
            w = jnp.asarray(loss.disc_weight, jnp.float32)
        d_weight = jnp.where(disc_on, w, 0.0)
        cot = g_rec + d_weight * g_adv
        d_updates, new_d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
        new_d_params = optax.apply_updates(state.d_params, d_updates)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(disc_on, a, b), new, old)  # noqa: E731
        d_params, d_opt = keep(new_d_params, state.d_params), keep(new_d_opt, state.d_opt)

    (grads,) = vjp((cot, beta))
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_decay > 0:
        # Warmed-up decay min(ema_decay, (1 + t) / (10 + t)): early pictures and checkpoints show the trained
        # weights instead of an average still dominated by the random initialisation.
        decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema_params = optax.incremental_update(params, state.ema_params, 1.0 - decay)
    new_state = state.replace(step=state.step + 1, params=params, opt=opt, ema_params=ema_params,
                              d_params=d_params, d_opt=d_opt)
    kl_true = jnp.mean(jnp.sum(kl.reshape(kl.shape[0], -1), axis=1))
    dims = x[0].size
    metrics = {"loss": rec_total + beta * kl_term + d_weight * d_stats["g/adv"], "rec": nll, "kl": kl_true,
               "kl_term": kl_term, "beta": beta, "neg_elbo_per_dim": (nll + kl_true) / dims,
               "active_units": vae_loss.active_units(aux["mean"]), "perceptual": perceptual,
               "d_weight": d_weight, "grad_norm": optax.global_norm(grads), **d_stats}
    return new_state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)
