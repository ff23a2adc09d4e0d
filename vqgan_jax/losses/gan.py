"""Pure loss math for adversarial training: GAN losses, taming's adaptive weight, R1, LeCam.

Everything here is a pure function of arrays (no modules, no state); the train step composes them.
Scalar results are float32 whatever the input dtype. Logits are the discriminator's raw outputs of any
shape (e.g. PatchGAN (B, h, w, 1)); means run over all their elements.
"""
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def _hinge_d(logits_real, logits_fake):
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def _hinge_g(logits_fake):
    return -jnp.mean(logits_fake)


def _non_saturating_d(logits_real, logits_fake):
    # -log sigmoid(real) - log(1 - sigmoid(fake)), written with softplus for stability.
    return 0.5 * (jnp.mean(jax.nn.softplus(-logits_real)) + jnp.mean(jax.nn.softplus(logits_fake)))


def _non_saturating_g(logits_fake):
    return jnp.mean(jax.nn.softplus(-logits_fake))


# kind -> (discriminator loss, generator adversarial loss)
_GAN_LOSSES = {
    "hinge": (_hinge_d, _hinge_g),
    "non_saturating": (_non_saturating_d, _non_saturating_g),
}
GAN_LOSS_KINDS = tuple(_GAN_LOSSES)


def _gan_pair(kind):
    if kind not in _GAN_LOSSES:
        raise UserError(f"unknown GAN loss {kind!r}; choose one of {', '.join(GAN_LOSS_KINDS)}")
    return _GAN_LOSSES[kind]


def d_loss(logits_real, logits_fake, kind="hinge"):
    """Discriminator loss.

    hinge:          0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))      (taming)
    non_saturating: 0.5 * (mean(softplus(-real)) + mean(softplus(fake)))

    Args:
      logits_real: float (B, ...) D logits on real images.
      logits_fake: float (B', ...) D logits on reconstructions.
      kind: one of GAN_LOSS_KINDS.
    Returns:
      float32 scalar.
    """
    return _gan_pair(kind)[0](_f32(logits_real), _f32(logits_fake))


def g_adv_loss(logits_fake, kind="hinge"):
    """Generator (autoencoder) adversarial loss.

    hinge: -mean(fake); non_saturating: mean(softplus(-fake)).

    Args:
      logits_fake: float (B, ...) D logits on reconstructions.
      kind: one of GAN_LOSS_KINDS.
    Returns:
      float32 scalar.
    """
    return _gan_pair(kind)[1](_f32(logits_fake))


def adaptive_weight(grad_rec, grad_adv, disc_weight, max_weight=1e4):
    """Taming's adaptive adversarial weight, without gradient.

    w = clip(||grad_rec|| / (||grad_adv|| + 1e-4), 0, max_weight) * disc_weight

    Args:
      grad_rec: float array of any shape, d(reconstruction + perceptual loss)/d(decoder last-layer kernel).
      grad_adv: float array of grad_rec's shape, d(generator adversarial loss)/d(same kernel).
      disc_weight: float scalar multiplier (loss.disc_weight).
      max_weight: float upper clip of the ratio (applied before disc_weight, as taming).
    Returns:
      float32 scalar, stop_gradient'ed.
    """
    rec_norm = jnp.sqrt(jnp.sum(jnp.square(_f32(grad_rec))))
    adv_norm = jnp.sqrt(jnp.sum(jnp.square(_f32(grad_adv))))
    weight = jnp.clip(rec_norm / (adv_norm + 1e-4), 0.0, max_weight) * disc_weight
    return jax.lax.stop_gradient(weight.astype(jnp.float32))


def conv_kernel_grad(h, kernel, cotangent_out):
    """dL/dkernel of a stride-1 'SAME' conv (flax nn.Conv layout) from its input and output cotangent.

    The train step gets the cotangent of the decoder's last conv output from one backward pass per loss
    term; this turns it into that layer's kernel gradient without another pass through the decoder.
    The bias does not affect the kernel gradient, so it is not needed. Computed in float32.

    Args:
      h: float (B, H, W, Cin) input of the conv.
      kernel: float (kh, kw, Cin, Cout) HWIO kernel (e.g. 3x3).
      cotangent_out: float (B, H, W, Cout) dL/d(conv output).
    Returns:
      float32 (kh, kw, Cin, Cout) dL/dkernel.
    """
    h, kernel, cotangent_out = _f32(h), _f32(kernel), _f32(cotangent_out)
    if h.ndim != 4 or kernel.ndim != 4 or cotangent_out.shape != h.shape[:3] + kernel.shape[3:]:
        raise ValueError(f"conv_kernel_grad shapes do not fit: h {h.shape}, kernel {kernel.shape}, "
                         f"cotangent {cotangent_out.shape}")

    conv = lambda k: jax.lax.conv_general_dilated(h, k, (1, 1), "SAME",  # noqa: E731
                                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _, vjp = jax.vjp(conv, kernel)
    (grad,) = vjp(cotangent_out)
    return grad


def r1_penalty(d_apply, x_real):
    """R1 gradient penalty (Mescheder et al. 2018), before its gamma / 2 factor.

    mean_b ||d D(x_b) / d x_b||^2, computed as the gradient of sum(D(x)) over the batch, which equals the
    per-image gradients as long as D treats images independently (no batch statistics).

    Args:
      d_apply: function x (B, H, W, C) -> logits (B, ...) of the discriminator.
      x_real: float (B, H, W, C) real images.
    Returns:
      float32 scalar.
    """
    grad = jax.grad(lambda x: jnp.sum(_f32(d_apply(x))))(x_real)
    per_image = jnp.sum(jnp.square(_f32(grad)), axis=tuple(range(1, grad.ndim)))
    return jnp.mean(per_image)


def lecam_regularizer(logits_real, logits_fake, ema_real, ema_fake):
    """LeCam regulariser (Tseng et al. 2021) for the discriminator.

    mean(relu(real - ema_fake)^2) + mean(relu(ema_real - fake)^2)

    Args:
      logits_real: float (B, ...) D logits on real images.
      logits_fake: float (B', ...) D logits on reconstructions.
      ema_real: float32 scalar, EMA of mean real logits (no gradient flows into it).
      ema_fake: float32 scalar, EMA of mean fake logits.
    Returns:
      float32 scalar.
    """
    ema_real = jax.lax.stop_gradient(_f32(ema_real))
    ema_fake = jax.lax.stop_gradient(_f32(ema_fake))
    return (jnp.mean(jnp.square(jax.nn.relu(_f32(logits_real) - ema_fake)))
            + jnp.mean(jnp.square(jax.nn.relu(ema_real - _f32(logits_fake)))))


def update_lecam_ema(ema, value, decay):
    """One EMA step: decay * ema + (1 - decay) * value, without gradient.

    Args:
      ema: float32 scalar, the current EMA.
      value: float scalar, this step's mean logits (e.g. jnp.mean(logits_real)).
      decay: float in [0, 1] (loss.lecam_decay).
    Returns:
      float32 scalar.
    """
    return jax.lax.stop_gradient(decay * _f32(ema) + (1.0 - decay) * _f32(value))
