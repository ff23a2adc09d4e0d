"""Pixel reconstruction losses (pure functions of arrays; float32 scalars whatever the input dtype)."""
import jax.numpy as jnp

from vqgan_jax.errors import UserError

RECONSTRUCTION_KINDS = ("l1", "l2")


def _f32(x):
    return jnp.asarray(x).astype(jnp.float32)


def reconstruction_loss(x, x_hat, kind="l1"):
    """Pixel reconstruction loss.

    Args:
      x: float (B, H, W, C) targets.
      x_hat: float (B, H, W, C) reconstructions.
      kind: 'l1' (mean |x - x_hat|) or 'l2' (mean (x - x_hat)^2).
    Returns:
      float32 scalar, the mean over all elements.
    """
    if kind not in RECONSTRUCTION_KINDS:
        raise UserError(f"unknown reconstruction loss {kind!r}; choose one of {', '.join(RECONSTRUCTION_KINDS)}")
    diff = _f32(x) - _f32(x_hat)
    return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(jnp.square(diff))
