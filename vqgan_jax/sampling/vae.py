"""New images and latent walks from a trained VAE (`train.loading.load_vae`): samples from N(0, I), linear and
spherical interpolation between images, and the posterior means the latent map is drawn from.

Latents are float32 (N, *latent_shape): (N, latent_dim) for a vector latent, (N, h, w, C) for a spatial one.
Images are float32 in [-1, 1] going in, uint8 (N, H, W, C) coming out.
"""
from __future__ import annotations

import jax
import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.train import loading
from vqgan_jax.viz import images as images_lib


def check_label(vae: loading.Loaded, label) -> None:
    """A class id must name one of a conditional VAE's classes; an unconditional VAE takes none."""
    n = int(vae.model.num_classes)
    if label is None:
        return
    if n == 0:
        raise UserError("--label needs a class-conditional VAE (model.conditional=True); this one is unconditional")
    if not 0 <= int(label) < n:
        raise UserError(f"--label {label} is outside the VAE's classes 0..{n - 1}")


def _labels(n: int, label) -> np.ndarray:
    return np.full((n,), 0 if label is None else int(label), np.int32)


def _padded(x: np.ndarray, size: int) -> np.ndarray:
    return x if len(x) == size else np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def decode(vae: loading.Loaded, z: np.ndarray, labels: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Latents (N, *latent_shape) and int labels (N,) -> images float32 (N, H, W, C) in [-1, 1]; batches are
    padded to batch_size so one program serves every call."""
    out = []
    for s in range(0, len(z), batch_size):
        n = len(z[s:s + batch_size])
        x = vae.run("decode_latents", _padded(np.asarray(z[s:s + batch_size], np.float32), batch_size),
                    _padded(labels[s:s + batch_size], batch_size))
        out.append(np.asarray(x, np.float32)[:n])
    return np.concatenate(out)


def encode_means(vae: loading.Loaded, images: np.ndarray, labels: np.ndarray | None = None,
                 batch_size: int = 16) -> np.ndarray:
    """Images float32 (N, H, W, C) in [-1, 1] -> posterior means float32 (N, *latent_shape)."""
    labels = _labels(len(images), None) if labels is None else np.asarray(labels, np.int32)
    out = []
    for s in range(0, len(images), batch_size):
        n = len(images[s:s + batch_size])
        mean, _ = vae.run("encode_latents", _padded(np.asarray(images[s:s + batch_size], np.float32), batch_size),
                          _padded(labels[s:s + batch_size], batch_size))
        out.append(np.asarray(mean, np.float32)[:n])
    return np.concatenate(out)


def sample_latents(vae: loading.Loaded, num: int, seed: int, temperature: float = 1.0) -> np.ndarray:
    """z ~ N(0, temperature^2 I): float32 (num, *latent_shape). The same seed gives the same latents."""
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    if temperature < 0:
        raise UserError(f"--temperature must be >= 0, got {temperature}")
    z = jax.random.normal(jax.random.PRNGKey(seed), (num, *vae.model.latent_shape))
    return float(temperature) * np.asarray(z, np.float32)


def sample_images(vae: loading.Loaded, num: int, *, seed: int = 0, batch_size: int = 16, temperature=None,
                  label=None) -> np.ndarray:
    """`num` new images decoded from N(0, temperature^2 I): uint8 (num, H, W, C). temperature defaults to
    the run's sample.temperature; label: a class id (conditional VAEs) or None."""
    check_label(vae, label)
    temperature = float(vae.config.sample.temperature) if temperature is None else float(temperature)
    z = sample_latents(vae, num, seed, temperature)
    return images_lib.to_uint8(decode(vae, z, _labels(num, label), batch_size))


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(1 - t) a + t b for each t: a, b (*S) -> (len(t), *S)."""
    t = np.asarray(t, np.float64).reshape(-1, *([1] * np.ndim(a)))
    return ((1 - t) * a[None] + t * b[None]).astype(np.float32)


def slerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation of the flattened vectors (Shoemake; White 2016 for generative models): along
    the great circle between the directions of a and b, with the norm going linearly from |a| to |b|
    (so between two equal-norm latents every point has that norm). a, b (*S) -> (len(t), *S)."""
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    t = np.asarray(t, np.float64)
    if na == 0 or nb == 0:
        return lerp(a, b, t)
    ua, ub = a64 / na, b64 / nb
    omega = np.arccos(np.clip(ua @ ub, -1.0, 1.0))
    if omega < 1e-6:  # (anti)parallel within round-off: the circle is undefined, lerp is exact enough
        return lerp(a, b, t)
    dirs = (np.sin((1 - t) * omega)[:, None] * ua + np.sin(t * omega)[:, None] * ub) / np.sin(omega)
    norms = (1 - t) * na + t * nb
    return (dirs * norms[:, None]).reshape(len(t), *np.shape(a)).astype(np.float32)


def interpolate(vae: loading.Loaded, image_a: np.ndarray, image_b: np.ndarray, steps: int, *,
                spherical: bool = False, label=None) -> np.ndarray:
    """Decoded images along the path between the posterior means of two images: float32 (steps, H, W, C).

    image_a, image_b: float32 (H, W, C) in [-1, 1]. The first and last images are the two reconstructions.
    """
    if steps < 2:
        raise UserError(f"--steps must be >= 2 (the two ends), got {steps}")
    check_label(vae, label)
    labels = _labels(2, label)
    za, zb = encode_means(vae, np.stack([image_a, image_b]), labels)
    t = np.linspace(0.0, 1.0, steps)
    path = slerp(za, zb, t) if spherical else lerp(za, zb, t)
    return decode(vae, path, _labels(steps, label))


def class_means(vae: loading.Loaded, images: np.ndarray, labels: np.ndarray, batch_size: int = 16) -> dict:
    """{class id: the average posterior mean of its images, float32 (*latent_shape)} (labels int (N,); a
    conditional VAE encodes each image with its own label)."""
    labels = np.asarray(labels, np.int32)
    means = encode_means(vae, images, labels if vae.model.num_classes else None, batch_size)
    return {int(c): means[labels == c].mean(axis=0) for c in np.unique(labels)}


def latent_strip(vae: loading.Loaded, za: np.ndarray, zb: np.ndarray, steps: int, *, spherical: bool = False,
                 label=None) -> np.ndarray:
    """One uint8 picture of `steps` images decoded along the path from latent za to zb (*latent_shape)."""
    if steps < 2:
        raise UserError(f"--steps must be >= 2 (the two ends), got {steps}")
    check_label(vae, label)
    t = np.linspace(0.0, 1.0, steps)
    x = decode(vae, slerp(za, zb, t) if spherical else lerp(za, zb, t), _labels(steps, label))
    return images_lib.grid(images_lib.to_uint8(x), ncols=steps)


def interpolation_strip(vae: loading.Loaded, image_a: np.ndarray, image_b: np.ndarray, steps: int, *,
                        spherical: bool = False, label=None) -> np.ndarray:
    """One uint8 picture: image a, the `steps` decoded points from a's reconstruction to b's, image b."""
    x = interpolate(vae, image_a, image_b, steps, spherical=spherical, label=label)
    row = np.concatenate([image_a[None], x, image_b[None]])
    return images_lib.grid(images_lib.to_uint8(row), ncols=len(row))


def generate(workdir: str, num: int, seed: int = 0, batch_size: int = 16, *, temperature=None,
             label=None) -> np.ndarray:
    """The "vae" generator of `sampling.generators`: uint8 (num, H, W, C) sampled from DIR/vae."""
    return sample_images(loading.load_vae(workdir), num, seed=seed, batch_size=batch_size, temperature=temperature,
                         label=label)


def write_interpolation(workdir: str, path_a: str, path_b: str, out_png: str, *, steps: int = 10,
                        spherical: bool = False, label=None) -> str:
    """`interpolation_strip` between two image files (resized and centre-cropped to the run's size) -> out_png."""
    from vqgan_jax.data.images import load_image
    vae = loading.load_vae(workdir)
    size = int(vae.config.data.image_size)
    strip = interpolation_strip(vae, load_image(path_a, size), load_image(path_b, size), steps,
                                spherical=spherical, label=label)
    images_lib.save_png(out_png, strip)
    return out_png
