"""Pure loss math of neural style transfer (Gatys, Ecker & Bethge 2016): Gram matrices, the content and
style losses on feature maps, and total variation. Scalars are float32; batched inputs give one loss per
image (shape (B,)), so a batch of content images is B independent problems.

Normalisations follow PyTorch's neural-style tutorial, whose weights (style 1e6, content 1) are the
command's defaults: a Gram matrix is divided by its feature map's number of elements (H * W * C), and the
losses are mean squared errors.
"""
import jax
import jax.numpy as jnp


def gram(features: jax.Array) -> jax.Array:
    """features float (B, H, W, C) -> float32 (B, C, C): G[b, c, d] = sum_hw F[b,h,w,c] F[b,h,w,d] / (H W C)."""
    f = features.astype(jnp.float32)
    b, h, w, c = f.shape
    return jnp.einsum("bhwc,bhwd->bcd", f, f) / (h * w * c)


def content_loss(features: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared difference of two feature maps float (B, H, W, C) -> float32 (B,)."""
    return jnp.mean(jnp.square(features.astype(jnp.float32) - target.astype(jnp.float32)), axis=(1, 2, 3))


def style_loss(features: jax.Array, target_gram: jax.Array) -> jax.Array:
    """Mean squared difference of Gram matrices: features float (B, H, W, C), target_gram float32 (B or 1,
    C, C) (one style for every image broadcasts) -> float32 (B,)."""
    return jnp.mean(jnp.square(gram(features) - target_gram), axis=(1, 2))


def total_variation(images: jax.Array) -> jax.Array:
    """Squared differences of neighbouring pixels summed over the image: float (B, H, W, C) -> float32 (B,).

    sum (x[i+1, j] - x[i, j])^2 + sum (x[i, j+1] - x[i, j])^2 (Mahendran & Vedaldi's beta = 2 term), which
    penalises the high-frequency noise that pixel optimisation leaves behind.
    """
    x = images.astype(jnp.float32)
    dy = x[:, 1:, :, :] - x[:, :-1, :, :]
    dx = x[:, :, 1:, :] - x[:, :, :-1, :]
    return jnp.sum(jnp.square(dy), axis=(1, 2, 3)) + jnp.sum(jnp.square(dx), axis=(1, 2, 3))
