"""The stage-1 train step: one pure function that updates the generator and the discriminator.

`vqgan_train_step(state, batch, rng, consts) -> (state, metrics)` after binding the static pieces with
`functools.partial` (models, optimizers, loss settings). It reads as five named pieces:

1. `generator_forward`: ONE autoencoder forward under `jax.vjp` (x -> x_hat, quantizer loss), keeping
   the VJP for the single backward pass; `reconstruction_gradient`: the reconstruction (+ LPIPS) loss
   and its gradient wrt x_hat.
2. `discriminator_gradients`: one discriminator forward on real and fake images, the D update's
   gradient and the generator's adversarial gradient wrt x_hat from the same forward. It always runs;
   before `disc_start` its results are masked arithmetically (taming runs D before its start too, with
   a zero factor). One program for every step, so nothing recompiles when D switches on.
3. `adaptive_weight`: taming's adaptive weight from the decoder's LAST layer only: both loss gradients
   wrt the conv_out kernel come from the cotangents at x_hat and the conv_out input (`h_last`), with no
   second backward pass through the decoder.
4. `apply_updates`: ONE backward pass through the autoencoder with the combined cotangent, then the
   optimizer updates (D held exactly as it was before `disc_start`, Adam moments included).
5. `bookkeeping`: dead-code restarts, the EMA of generator weights, LeCam's EMAs.

This is what makes the step cheaper than taming's, which runs the autoencoder forward twice and
backpropagates the generator loss twice to get the adaptive weight.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from vqgan_jax.losses import gan, reconstruction
from vqgan_jax.nn.quantizer import restart_dead_codes
from vqgan_jax.train.state import VQGANState


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Static (Python) loss settings; built from config.loss by `LossSettings.from_config`."""
    rec_type: str = "l1"
    rec_weight: float = 1.0
    perceptual_weight: float = 0.0
    codebook_weight: float = 1.0
    disc_loss: str = "hinge"
    disc_weight: float = 0.8
    disc_start: int = 0
    adaptive_weight: bool = True
    adaptive_weight_max: float = 1e4
    r1_weight: float = 0.0
    lecam_weight: float = 0.0
    lecam_decay: float = 0.999

    @classmethod
    def from_config(cls, loss_cfg) -> "LossSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: loss_cfg[k] for k in names})

    @property
    def use_disc(self) -> bool:
        return self.disc_weight > 0


class GeneratorPass(NamedTuple):
    """What the autoencoder forward leaves for the rest of the step."""
    x_hat: jax.Array          # float32 (B, H, W, 3) reconstructions
    q_loss: jax.Array         # float32 () the quantizer's loss
    vjp: Callable             # (cotangent of x_hat, of q_loss) -> (g_params gradient,)
    aux: dict                 # the model's aux (indices, usage, h_last, z_e, ...)
    vq_stats: Any             # the quantizer's updated statistics ({} without any)


def generator_forward(model, state: VQGANState, x: jax.Array, rng_drop, rng_vq) -> GeneratorPass:
    """One train-mode autoencoder forward of x float32 (B, H, W, 3) under `jax.vjp` wrt the generator's params."""
    def forward(g_params):
        (x_hat, aux), new_vars = model.apply(
            {"params": g_params, **({"vq_stats": state.vq_stats} if state.vq_stats else {})},
            x, train=True, rngs={"dropout": rng_drop, "vq": rng_vq}, mutable=["vq_stats"])
        return (x_hat.astype(jnp.float32), aux["q_loss"]), (aux, new_vars.get("vq_stats", {}))

    (x_hat, q_loss), vjp, (aux, vq_stats) = jax.vjp(forward, state.g_params, has_aux=True)
    return GeneratorPass(x_hat, q_loss, vjp, aux, vq_stats)


def reconstruction_gradient(x, x_hat, loss: LossSettings, lpips_apply: Callable | None, consts: dict):
    """rec_weight * reconstruction + perceptual_weight * LPIPS, and its gradient wrt x_hat.

    Returns (nll float32 (), rec float32 (), perceptual float32 (), gradient float32 (B, H, W, 3)).
    """
    def nll_fn(xh):
        rec = reconstruction.reconstruction_loss(x, xh, loss.rec_type)
        if loss.perceptual_weight > 0:
            p = jnp.mean(lpips_apply(consts["lpips"], x, xh))
        else:
            p = jnp.zeros((), jnp.float32)
        return loss.rec_weight * rec + loss.perceptual_weight * p, (rec, p)

    (nll, (rec, perceptual)), grad = jax.value_and_grad(nll_fn, has_aux=True)(x_hat)
    return nll, rec, perceptual, grad


def discriminator_gradients(disc, state: VQGANState, x, x_hat, loss: LossSettings):
    """D's loss gradient (real and fake, + R1, + LeCam) and the generator's adversarial gradient wrt x_hat.

    Returns (d_grads like state.d_params, g_adv_x float32 (B, H, W, 3), stats dict of float32 scalars).
    The fake images are a constant for D; one forward on them serves both gradients.
    """
    d_params = state.d_params
    logits_real, vjp_real = jax.vjp(lambda p: disc.apply({"params": p}, x), d_params)
    logits_fake, vjp_fake = jax.vjp(lambda p, xh: disc.apply({"params": p}, xh), d_params, x_hat)
    logits_real, logits_fake = logits_real.astype(jnp.float32), logits_fake.astype(jnp.float32)

    def d_objective(lr, lf):
        d = gan.d_loss(lr, lf, loss.disc_loss)
        if loss.lecam_weight > 0:
            d = d + loss.lecam_weight * gan.lecam_regularizer(lr, lf, state.lecam["real"], state.lecam["fake"])
        return d

    d_val, (c_real, c_fake) = jax.value_and_grad(d_objective, argnums=(0, 1))(logits_real, logits_fake)
    d_grads = jax.tree.map(jnp.add, vjp_real(c_real)[0], vjp_fake(c_fake)[0])
    r1 = jnp.zeros((), jnp.float32)
    if loss.r1_weight > 0:
        r1, r1_grads = jax.value_and_grad(
            lambda p: gan.r1_penalty(lambda xr: disc.apply({"params": p}, xr), x))(d_params)
        d_grads = jax.tree.map(lambda a, b: a + loss.r1_weight * b, d_grads, r1_grads)
    g_adv, c_gfake = jax.value_and_grad(lambda lf: gan.g_adv_loss(lf, loss.disc_loss))(logits_fake)
    g_adv_x = vjp_fake(c_gfake)[1]
    stats = {"d/loss": d_val, "d/r1": r1, "d/logits_real": jnp.mean(logits_real),
             "d/logits_fake": jnp.mean(logits_fake), "g/adv": g_adv}
    return d_grads, g_adv_x, stats


def adaptive_weight(state: VQGANState, h_last, g_rec_x, g_adv_x, loss: LossSettings, disc_on) -> jax.Array:
    """The adversarial term's weight, float32 (): taming's ||grad rec|| / ||grad adv|| at the decoder's
    last conv kernel times disc_weight (or disc_weight alone), 0 before disc_start."""
    if loss.adaptive_weight:
        kernel = state.g_params["decoder"]["conv_out"]["kernel"]
        h_last = h_last.astype(jnp.float32)
        grad_rec_w = gan.conv_kernel_grad(h_last, kernel, g_rec_x)
        grad_adv_w = gan.conv_kernel_grad(h_last, kernel, g_adv_x)
        weight = gan.adaptive_weight(grad_rec_w, grad_adv_w, loss.disc_weight, loss.adaptive_weight_max)
    else:
        weight = jnp.asarray(loss.disc_weight, jnp.float32)
    return jnp.where(disc_on, weight, 0.0)


def apply_updates(state: VQGANState, g_grads, d_grads, *, g_tx, d_tx, use_disc: bool, disc_on):
    """Both optimizer steps. Before disc_start D stays exactly as it was (its Adam moments included).

    Returns (g_params, g_opt, d_params, d_opt).
    """
    g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    if not use_disc:
        return g_params, g_opt, state.d_params, state.d_opt
    d_updates, new_d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    new_d_params = optax.apply_updates(state.d_params, d_updates)
    keep_until_on = lambda new, old: jax.tree.map(lambda a, b: jnp.where(disc_on, a, b), new, old)  # noqa: E731
    return g_params, g_opt, keep_until_on(new_d_params, state.d_params), keep_until_on(new_d_opt, state.d_opt)


def bookkeeping(state: VQGANState, g_params, vq_stats, aux: dict, d_stats: dict, rng_restart, *,
                loss: LossSettings, ema_decay: float, restart_threshold: float, ema_codebook: bool, disc_on):
    """Dead-code restarts of a gradient-learned codebook (the EMA codebook restarts inside the module),
    the EMA of generator weights, and LeCam's logit EMAs.

    Returns (g_params, vq_stats, ema_params, lecam, num_restarted int32 ()).
    """
    n_restarted = aux.get("num_restarted", jnp.zeros((), jnp.int32))
    if restart_threshold > 0 and not ema_codebook:
        z_flat = aux["z_e"].reshape(-1, aux["z_e"].shape[-1]).astype(jnp.float32)
        codebook, usage, n_restarted = restart_dead_codes(
            g_params["quantize"]["codebook"], vq_stats["quantize"]["usage"], z_flat, rng_restart, restart_threshold)
        g_params = {**g_params, "quantize": {**g_params["quantize"], "codebook": codebook}}
        vq_stats = {**vq_stats, "quantize": {**vq_stats["quantize"], "usage": usage}}
    ema_params = state.ema_params
    if ema_decay > 0:
        ema_params = optax.incremental_update(g_params, state.ema_params, 1.0 - ema_decay)
    lecam = state.lecam
    if loss.lecam_weight > 0:
        def update(old, value):
            return jnp.where(disc_on, gan.update_lecam_ema(old, value, loss.lecam_decay), old)
        lecam = {"real": update(lecam["real"], d_stats["d/logits_real"]),
                 "fake": update(lecam["fake"], d_stats["d/logits_fake"])}
    return g_params, vq_stats, ema_params, lecam, n_restarted


def vqgan_train_step(state: VQGANState, batch: dict, rng: jax.Array, consts: Any, *, model, disc,
                     g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation, loss: LossSettings,
                     lpips_apply: Callable | None, ema_decay: float, restart_threshold: float,
                     ema_codebook: bool) -> tuple[VQGANState, dict]:
    """One G + D update.

    state: replicated VQGANState. batch: {'image': float32 (B, H, W, 3) in [-1, 1], ...}, sharded on
    the batch axis. rng: this step's key (fold_in(seed_key, step)). consts: frozen arrays the step reads
    but never updates (the LPIPS params), an argument so they are not baked into the program as constants.
    Returns the new state and a flat dict of float32 scalars (`g/rec`, `d/loss`, ...).
    """
    x = batch["image"]
    rng_drop, rng_vq, rng_restart = jax.random.split(rng, 3)
    disc_on = state.step >= loss.disc_start  # traced bool: warm-ups are arithmetic, never a Python if

    gen = generator_forward(model, state, x, rng_drop, rng_vq)
    nll, rec, perceptual, g_rec_x = reconstruction_gradient(x, gen.x_hat, loss, lpips_apply, consts)
    if loss.use_disc:
        d_grads, g_adv_x, d_stats = discriminator_gradients(disc, state, x, gen.x_hat, loss)
        d_stats = jax.tree.map(lambda v: jnp.where(disc_on, v, jnp.zeros_like(v)), d_stats)
        d_weight = adaptive_weight(state, gen.aux["h_last"], g_rec_x, g_adv_x, loss, disc_on)
        cot_x = g_rec_x + d_weight * g_adv_x
    else:
        zero = jnp.zeros((), jnp.float32)
        d_grads, d_weight, cot_x = None, zero, g_rec_x
        d_stats = {"d/loss": zero, "d/r1": zero, "d/logits_real": zero, "d/logits_fake": zero, "g/adv": zero}
    (g_grads,) = gen.vjp((cot_x, jnp.asarray(loss.codebook_weight, gen.q_loss.dtype)))
    g_params, g_opt, d_params, d_opt = apply_updates(state, g_grads, d_grads, g_tx=g_tx, d_tx=d_tx,
                                                     use_disc=loss.use_disc, disc_on=disc_on)
    g_params, vq_stats, ema_params, lecam, n_restarted = bookkeeping(
        state, g_params, gen.vq_stats, gen.aux, d_stats, rng_restart, loss=loss, ema_decay=ema_decay,
        restart_threshold=restart_threshold, ema_codebook=ema_codebook, disc_on=disc_on)

    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt, d_opt=d_opt,
                              vq_stats=vq_stats if state.vq_stats else state.vq_stats, ema_params=ema_params,
                              lecam=lecam)
    aux = gen.aux
    metrics = {
        "g/rec": rec, "g/perceptual": perceptual, "g/nll": nll,
        "g/commit": aux["commit_loss"], "g/codebook": aux["codebook_loss"], "g/q_loss": gen.q_loss,
        "g/total": nll + loss.codebook_weight * gen.q_loss + d_weight * d_stats["g/adv"],
        "d_weight": d_weight, "disc_on": disc_on.astype(jnp.float32),
        "codebook/usage": aux["usage"], "codebook/perplexity": aux["perplexity"],
        "codebook/restarted": jnp.asarray(n_restarted, jnp.float32),
        "g/grad_norm": optax.global_norm(g_grads),
        "d/grad_norm": jnp.where(disc_on, optax.global_norm(d_grads), 0.0) if d_grads is not None else 0.0,
        **d_stats,
    }
    return new_state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)
