"""The stage-1 train step: one pure function that updates the generator and the discriminator.

`vqgan_train_step(state, batch, rng) -> (state, metrics)` after binding the static pieces with
`functools.partial` (models, optimizers, loss settings). It does

1. ONE autoencoder forward under `jax.vjp` (x -> x_hat, quantizer loss), keeping the VJP;
2. the reconstruction (+ LPIPS) loss and its gradient wrt x_hat;
3. when the step is past `disc_start` (a `lax.cond` on the step, so no recompilation and no
   discriminator work before it): one discriminator forward on real and fake images, the D update's
   gradient, and the generator's adversarial gradient wrt x_hat from the same forward;
4. taming's adaptive weight from the decoder's LAST layer only: both loss gradients wrt the conv_out
   kernel come from the cotangents at x_hat and the conv_out input (`h_last`), no second backward
   pass through the decoder;
5. ONE backward pass through the autoencoder with the combined cotangent.

This is what makes the step cheaper than taming's, which runs the autoencoder forward twice and
backpropagates the generator loss twice to get the adaptive weight.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from vqgan_jax import losses
from vqgan_jax.quantizer import restart_dead_codes
from vqgan_jax.state import VQGANState


def skip_disc_with_cond() -> bool:
    """Whether the discriminator's work before disc_start is skipped with `lax.cond` (GPU/TPU) or
    computed and masked (XLA:CPU, where convolutions inside a conditional are far slower)."""
    return jax.default_backend() != "cpu"


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


def vqgan_train_step(
    state: VQGANState,
    batch: dict,
    rng: jax.Array,
    consts: Any,
    *,
    model,
    disc,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    loss: LossSettings,
    lpips_apply: Callable | None,
    ema_decay: float,
    restart_threshold: float,
    ema_codebook: bool,
) -> tuple[VQGANState, dict]:
    """One G + D update.

    state: replicated VQGANState. batch: {'image': float32 (B, H, W, 3) in [-1, 1], ...}, sharded on
    the batch axis. rng: this step's key (fold_in(seed_key, step)). consts: frozen arrays the step
    reads but never updates (the LPIPS params), passed as an argument so they are not baked into
    the compiled program as constants.
    Returns the new state and a flat dict of float32 scalars (`g/rec`, `d/loss`, ...).
    """
    x = batch["image"]
    rng_drop, rng_vq, rng_restart = jax.random.split(rng, 3)
    disc_on = state.step >= loss.disc_start  # traced bool: warm-ups are arithmetic, never a Python if

    # ---- 1. autoencoder forward, VJP kept for the single backward pass ----------------------------
    def ae_forward(g_params):
        (x_hat, aux), new_vars = model.apply(
            {"params": g_params, **({"vq_stats": state.vq_stats} if state.vq_stats else {})},
            x, train=True, rngs={"dropout": rng_drop, "vq": rng_vq}, mutable=["vq_stats"])
        return (x_hat.astype(jnp.float32), aux["q_loss"]), (aux, new_vars.get("vq_stats", {}))

    (x_hat, q_loss), ae_vjp, (aux, new_vq_stats) = jax.vjp(ae_forward, state.g_params, has_aux=True)

    # ---- 2. reconstruction + perceptual loss and its gradient wrt x_hat ---------------------------
    def rec_loss_fn(xh):
        rec = losses.reconstruction_loss(x, xh, loss.rec_type)
        if loss.perceptual_weight > 0:
            p = jnp.mean(lpips_apply(consts["lpips"], x, xh))
        else:
            p = jnp.zeros((), jnp.float32)
        return loss.rec_weight * rec + loss.perceptual_weight * p, (rec, p)

    (nll, (rec, perceptual)), g_rec_x = jax.value_and_grad(rec_loss_fn, has_aux=True)(x_hat)

    # ---- 3. discriminator: one forward on real + fake, only once it is switched on -----------------
    zeros_d = jax.tree.map(jnp.zeros_like, state.d_params)

    def disc_branch(_):
        d_params = state.d_params
        logits_real, vjp_real = jax.vjp(lambda p: disc.apply({"params": p}, x), d_params)
        logits_fake, vjp_fake = jax.vjp(lambda p, xh: disc.apply({"params": p}, xh), d_params, x_hat)
        logits_real = logits_real.astype(jnp.float32)
        logits_fake = logits_fake.astype(jnp.float32)

        def d_objective(lr, lf):
            d = losses.d_loss(lr, lf, loss.disc_loss)
            if loss.lecam_weight > 0:
                d = d + loss.lecam_weight * losses.lecam_regularizer(
                    lr, lf, state.lecam["real"], state.lecam["fake"])
            return d

        d_val, (c_real, c_fake) = jax.value_and_grad(d_objective, argnums=(0, 1))(logits_real, logits_fake)
        # The fake images are a constant for D: only its params get this cotangent.
        d_grads = jax.tree.map(jnp.add, vjp_real(c_real)[0], vjp_fake(c_fake)[0])
        if loss.r1_weight > 0:
            r1, r1_grads = jax.value_and_grad(
                lambda p: losses.r1_penalty(lambda xr: disc.apply({"params": p}, xr), x))(d_params)
            d_grads = jax.tree.map(lambda a, b: a + loss.r1_weight * b, d_grads, r1_grads)
        else:
            r1 = jnp.zeros((), jnp.float32)
        g_adv, c_gfake = jax.value_and_grad(lambda lf: losses.g_adv_loss(lf, loss.disc_loss))(logits_fake)
        g_adv_x = vjp_fake(c_gfake)[1]  # generator's gradient wrt x_hat through D
        stats = {"d/loss": d_val, "d/r1": r1, "d/logits_real": jnp.mean(logits_real),
                 "d/logits_fake": jnp.mean(logits_fake), "g/adv": g_adv}
        return d_grads, g_adv_x, stats

    def no_disc_branch(_):
        z = jnp.zeros((), jnp.float32)
        stats = {"d/loss": z, "d/r1": z, "d/logits_real": z, "d/logits_fake": z, "g/adv": z}
        return zeros_d, jnp.zeros_like(x_hat), stats

    if loss.use_disc and skip_disc_with_cond():
        d_grads, g_adv_x, d_stats = jax.lax.cond(disc_on, disc_branch, no_disc_branch, None)
    elif loss.use_disc:
        # XLA:CPU runs convolutions inside a conditional ~30x slower than outside it (measured: the
        # flowers64 discriminator's forward+backward takes 0.11 s plain, 3.4 s in lax.cond), so on CPU
        # D always runs and its results are masked arithmetically before disc_start.
        d_grads, g_adv_x, d_stats = disc_branch(None)
        d_stats = jax.tree.map(lambda v: jnp.where(disc_on, v, jnp.zeros_like(v)), d_stats)
    else:
        d_grads, g_adv_x, d_stats = no_disc_branch(None)

    # ---- 4. adaptive weight from the decoder's last layer only -----------------------------------
    if loss.use_disc:
        kernel = state.g_params["decoder"]["conv_out"]["kernel"]
        h_last = aux["h_last"].astype(jnp.float32)
        if loss.adaptive_weight:
            grad_rec_w = losses.conv_kernel_grad(h_last, kernel, g_rec_x)
            grad_adv_w = losses.conv_kernel_grad(h_last, kernel, g_adv_x)
            d_weight = losses.adaptive_weight(grad_rec_w, grad_adv_w, loss.disc_weight, loss.adaptive_weight_max)
        else:
            d_weight = jnp.asarray(loss.disc_weight, jnp.float32)
        d_weight = jnp.where(disc_on, d_weight, 0.0)
    else:
        d_weight = jnp.zeros((), jnp.float32)

    # ---- 5. one backward pass through the autoencoder ---------------------------------------------
    cot_x = g_rec_x + d_weight * g_adv_x
    (g_grads,) = ae_vjp((cot_x, jnp.asarray(loss.codebook_weight, q_loss.dtype)))

    g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    if loss.use_disc:
        d_updates, new_d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
        new_d_params = optax.apply_updates(state.d_params, d_updates)
        # Before disc_start D stays exactly as it was (Adam's moments included).
        d_params = jax.tree.map(lambda a, b: jnp.where(disc_on, a, b), new_d_params, state.d_params)
        d_opt = jax.tree.map(lambda a, b: jnp.where(disc_on, a, b), new_d_opt, state.d_opt)
    else:
        d_params, d_opt = state.d_params, state.d_opt

    # Dead-code restart of a gradient-learned codebook (the EMA codebook restarts inside the module).
    n_restarted = aux.get("num_restarted", jnp.zeros((), jnp.int32))
    if restart_threshold > 0 and not ema_codebook:
        z_flat = aux["z_e"].reshape(-1, aux["z_e"].shape[-1]).astype(jnp.float32)
        cb, usage, n_restarted = restart_dead_codes(
            g_params["quantize"]["codebook"], new_vq_stats["quantize"]["usage"], z_flat, rng_restart,
            restart_threshold)
        g_params = {**g_params, "quantize": {**g_params["quantize"], "codebook": cb}}
        new_vq_stats = {**new_vq_stats, "quantize": {**new_vq_stats["quantize"], "usage": usage}}

    ema_params = state.ema_params
    if ema_decay > 0:
        ema_params = optax.incremental_update(g_params, state.ema_params, 1.0 - ema_decay)
    lecam = state.lecam
    if loss.lecam_weight > 0:
        lecam = {
            "real": jnp.where(disc_on, losses.update_lecam_ema(state.lecam["real"], d_stats["d/logits_real"],
                                                               loss.lecam_decay), state.lecam["real"]),
            "fake": jnp.where(disc_on, losses.update_lecam_ema(state.lecam["fake"], d_stats["d/logits_fake"],
                                                               loss.lecam_decay), state.lecam["fake"]),
        }

    new_state = state.replace(
        step=state.step + 1, g_params=g_params, d_params=d_params, g_opt=g_opt, d_opt=d_opt,
        vq_stats=new_vq_stats if state.vq_stats else state.vq_stats, ema_params=ema_params, lecam=lecam)
    metrics = {
        "g/rec": rec, "g/perceptual": perceptual, "g/nll": nll,
        "g/commit": aux["commit_loss"], "g/codebook": aux["codebook_loss"], "g/q_loss": q_loss,
        "g/total": nll + loss.codebook_weight * q_loss + d_weight * d_stats["g/adv"],
        "d_weight": d_weight, "disc_on": disc_on.astype(jnp.float32),
        "codebook/usage": aux["usage"], "codebook/perplexity": aux["perplexity"],
        "codebook/restarted": jnp.asarray(n_restarted, jnp.float32),
        "g/grad_norm": optax.global_norm(g_grads), "d/grad_norm": optax.global_norm(d_grads),
        **d_stats,
    }
    return new_state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)


# ================================== stage 2: the prior ============================================

@dataclasses.dataclass(frozen=True)
class PriorTokens:
    """How token grids become GPT-2 sequences (static).

    Codes are 0..num_codes-1; `null_token` = num_codes starts an unconditional sequence (and is the
    dropped-label token for classifier-free guidance); class c starts with num_codes + 1 + c.
    """
    num_codes: int
    num_classes: int = 0

    @property
    def null_token(self) -> int:
        return self.num_codes

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 1 + self.num_classes

    def first_token(self, labels: jax.Array | None) -> jax.Array:
        """labels int32 (B,) or None -> the start tokens int32 (B,)."""
        if labels is None or self.num_classes == 0:
            return jnp.full(() if labels is None else labels.shape, self.null_token, jnp.int32)
        return self.num_codes + 1 + labels.astype(jnp.int32)


def prior_train_step(state, batch: dict, rng: jax.Array, *, model, tx, tokens: PriorTokens,
                     label_dropout: float, pkeep: float):
    """One next-token update of the prior.

    batch: {'ids': int32 (B, T) codebook ids of a flattened grid, 'label': int32 (B,)}.
    The sequence is [start or class token, ids[:-1]] -> predict ids; the loss and accuracy are over the
    T code positions, with logits restricted to the codes (special tokens are never targets).
    """
    ids = batch["ids"].astype(jnp.int32)
    rng_drop, rng_label, rng_keep, rng_rand = jax.random.split(rng, 4)
    first = tokens.first_token(batch["label"])
    if tokens.num_classes > 0 and label_dropout > 0:
        drop = jax.random.bernoulli(rng_label, label_dropout, first.shape)
        first = jnp.where(drop, tokens.null_token, first)
    inputs = ids[:, :-1]
    if pkeep < 1.0:  # taming's token corruption of the inputs (targets stay clean)
        keep = jax.random.bernoulli(rng_keep, pkeep, inputs.shape)
        inputs = jnp.where(keep, inputs, jax.random.randint(rng_rand, inputs.shape, 0, tokens.num_codes))
    seq = jnp.concatenate([first[:, None], inputs], axis=1)  # (B, T)

    def loss_fn(params):
        logits = model.apply({"params": params}, seq, train=True, rngs={"dropout": rng_drop})
        logits = logits[..., : tokens.num_codes].astype(jnp.float32)  # (B, T, K)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()
        return loss, logits

    (loss_val, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss_val, "accuracy": jnp.mean(jnp.argmax(logits, -1) == ids),
               "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt=opt), \
        jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)
