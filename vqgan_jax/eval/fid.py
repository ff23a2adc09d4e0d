"""FID, KID and Inception Score on pytorch-fid's Inception, with clean-fid's preprocessing.

The pipeline for a set of images:
    clean_resize:        uint8 (N, H, W, 3) -> float32 (N, 299, 299, 3) in [0, 255]
                         (PIL bicubic per channel in float mode 'F', clean-fid's "clean" mode)
    InceptionFeatures:   -> pool3 float64 (N, 2048) and logits float32 (N, 1008)
    feature_stats:       pool3 -> mu (2048,), sigma (2048, 2048), both float64
    frechet_distance:    two (mu, sigma) -> FID
    kernel_inception_distance / inception_score on pool3 / logits.
All statistics are plain numpy (no scipy): the matrix square root of FID comes from symmetric
eigendecompositions. The network sees x / 255 * 2 - 1, as in pytorch-fid, whose weights it uses (clean-fid's
own network feeds (x - 128) / 128, within 0.008 of that per value).
"""
import hashlib
import os
import zipfile
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vqgan_jax.errors import UserError
from vqgan_jax.models.inception import Inception

INCEPTION_SIZE = 299


def quantize_to_uint8(images: np.ndarray) -> np.ndarray:
    """float images in [-1, 1] -> uint8 in [0, 255] (round((x + 1) * 127.5), clipped); uint8 passes through.

    Generated images are quantised like this before clean-fid's resize, as if saved to PNG first.
    """
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind != "f":
        raise UserError(f"images should be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    return np.clip(np.round((images.astype(np.float64) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def clean_resize(images: np.ndarray, size: int = INCEPTION_SIZE) -> np.ndarray:
    """clean-fid's "clean" resize: each channel as a PIL float image ('F'), bicubic to size x size, clip.

    Args:
      images: (N, H, W, 3) uint8 in [0, 255], or float in [-1, 1] (quantised first, see quantize_to_uint8).
      size: output height and width (299 for Inception).
    Returns:
      float32 (N, size, size, 3) in [0, 255]; an input already size x size comes back unchanged.
    """
    images = quantize_to_uint8(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UserError(f"images should be (N, H, W, 3) RGB, got shape {images.shape}")
    out = np.empty((images.shape[0], size, size, 3), np.float32)
    for i, image in enumerate(images):
        for c in range(3):
            channel = Image.fromarray(image[:, :, c].astype(np.float32))  # float32 -> mode 'F'
            out[i, :, :, c] = np.asarray(channel.resize((size, size), resample=Image.BICUBIC))
    return np.clip(out, 0.0, 255.0, out=out)


class InceptionFeatures:
    """Batches images through one jitted Inception apply (fixed batch, zero-padded: compiles once per process).

    Usage:
      feats = InceptionFeatures(load_inception_params(path), batch_size=50)
      pool3, logits = feats.from_images(uint8_images)   # any H, W: clean_resize inside
    """

    def __init__(self, variables: dict, batch_size: int = 50, dtype=jnp.float32, logits_bias: bool = False):
        """variables: from `inception.load_inception_params`. batch_size: images per compiled call.
        dtype: conv computation dtype. logits_bias: add fc.bias to the logits (see `Inception`)."""
        if batch_size < 1:
            raise UserError(f"batch_size should be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.variables = variables
        self._apply = jax.jit(Inception(logits_bias=logits_bias, dtype=dtype).apply)

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images: float (N, 299, 299, 3) in [0, 255], already resized.

        Returns (pool3 float64 (N, 2048), logits float32 (N, 1008)).
        """
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[1:] != (INCEPTION_SIZE, INCEPTION_SIZE, 3):
            raise UserError(f"Inception needs (N, 299, 299, 3) images (use clean_resize), got {images.shape}")
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            n = len(batch)
            if n < self.batch_size:  # pad with zeros to the compiled shape, drop the padding afterwards
                batch = np.concatenate([batch, np.zeros((self.batch_size - n, *batch.shape[1:]), np.float32)])
            p, lg = self._apply(self.variables, jnp.asarray(batch))
            pools.append(np.asarray(p[:n], np.float64))
            logits.append(np.asarray(lg[:n], np.float32))
        if not pools:
            return np.zeros((0, 2048), np.float64), np.zeros((0, 1008), np.float32)
        return np.concatenate(pools), np.concatenate(logits)

    def from_images(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images: (N, H, W, 3) uint8 or float in [-1, 1]; resized with clean_resize one batch at a time.

        Returns (pool3 float64 (N, 2048), logits float32 (N, 1008)).
        """
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            p, lg = self(clean_resize(images[start:start + self.batch_size]))
            pools.append(p)
            logits.append(lg)
        if not pools:
            return self(np.zeros((0, INCEPTION_SIZE, INCEPTION_SIZE, 3), np.float32))
        return np.concatenate(pools), np.concatenate(logits)


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """feats: (N, D), N >= 2. Returns (mu float64 (D,), sigma float64 (D, D)), sigma = np.cov(rowvar=False)."""
    feats = np.asarray(feats, np.float64)
    if feats.ndim != 2 or len(feats) < 2:
        raise UserError(f"feature statistics need at least 2 feature rows (N, D), got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite (D, D) matrix.

    Eigenvalues below D * eps * max|eigenvalue| are round-off (numpy's matrix_rank tolerance) and become 0:
    their square roots (~1e-8) would otherwise add up to ~1e-5 of FID for a singular covariance.
    """
    w, v = np.linalg.eigh(matrix)
    w = np.where(w > len(w) * np.finfo(np.float64).eps * np.max(np.abs(w)), w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
        |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    s1 s2 is similar to s1^(1/2) s2 s1^(1/2) = A A^T with A = s1^(1/2) s2^(1/2), so tr((s1 s2)^(1/2)) is the
    sum of A's singular values: two symmetric `eigh` and one SVD, without scipy and without the complex
    parts and singular-matrix retries of `scipy.linalg.sqrtm(s1 @ s2)`. Singular values carry no square
    root of round-off, so identical statistics give 0 to ~1e-12 even for singular covariances.

    Args:
      mu1, mu2: (D,) means. sigma1, sigma2: (D, D) covariances. Any float dtype; computed in float64.
    Returns:
      The distance as a Python float (0 up to round-off for identical statistics).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: shapes {mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape} do not match")
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2  # np.cov is symmetric only up to round-off
    tr_covmean = np.sum(np.linalg.svd(_sqrt_psd(s1) @ _sqrt_psd(s2), compute_uv=False))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel (x.y / d + 1)^3 of KID. x: (m, d), y: (n, d). Returns (m, n) float64."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kernel_inception_distance(f1, f2, num_subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets (clean-fid,
    torch-fidelity). Each subset draws m = min(subset_size, len(f1), len(f2)) rows of each set without
    replacement and computes
        sum_{i!=j} k(x_i, x_j) / (m(m-1)) + sum_{i!=j} k(y_i, y_j) / (m(m-1)) - 2 sum_{i,j} k(x_i, y_j) / m^2.

    Args:
      f1, f2: (N1, D), (N2, D) features; N1, N2 >= 2.
      num_subsets: number of subsets. subset_size: rows per subset before clipping. seed: numpy seed.
    Returns:
      (mean, std) over subsets as Python floats (std with ddof=0, as torch-fidelity).
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2 or f1.shape[1:] != f2.shape[1:]:
        raise UserError(f"KID needs two feature sets (N, D) of one width with N >= 2, got {f1.shape} and {f2.shape}")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets, np.float64)
    for s in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy = _poly_kernel(x, x), _poly_kernel(y, y)
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values[s] = within - 2.0 * _poly_kernel(x, y).sum() / (m * m)
    return float(values.mean()), float(values.std())


def inception_score(logits, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), mean and std over `splits` consecutive parts.

    Args:
      logits: (N, C) float, N >= splits; softmax over all C (1008 for pytorch-fid's network).
      splits: number of parts (10 in the original code); p(y) is the mean prediction within a part.
    Returns:
      (mean, std) as Python floats; 1 for identical predictions, C for confident ones spread evenly over C.
    """
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits or splits < 1:
        raise UserError(f"Inception Score needs logits (N, C) with N >= splits={splits}, got {logits.shape}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, C) log p(y|x)
    scores = []
    for part in np.array_split(log_p, splits):
        p = np.exp(part)
        p_y = p.mean(axis=0)  # (C,) p(y) of this part
        # A class with p(y) = 0 has p(y|x) = 0 for every x of the part: its terms are 0, so log 1 stands in
        # for log 0 (log p(y|x) itself is finite, from the log-softmax).
        kl = np.sum(p * (part - np.log(np.where(p_y > 0, p_y, 1.0))), axis=1)  # (n,) KL(p(y|x) || p(y))
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def cache_key(*parts: str) -> str:
    """sha256 of the parts (file lists, weight hashes, settings) joined with newlines, as a cache key."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def cached_real_stats(cache_path, key: str, compute_fn: Callable[[], np.ndarray]) -> dict:
    """Reference statistics, read from `cache_path` when it was written under the same `key`.

    Args:
      cache_path: npz file holding key, mu, sigma and features.
      key: identifies what the features came from (e.g. `cache_key(file list, weights sha256, size)`).
      compute_fn: () -> pool3 features float (N, D); called only on a miss (absent, other key, unreadable).
    Returns:
      {'mu': float64 (D,), 'sigma': float64 (D, D), 'features': float64 (N, D)} (features serve KID).
    """
    cache_path = os.fspath(cache_path)
    if os.path.isfile(cache_path):
        try:
            with np.load(cache_path, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    return {name: np.asarray(z[name], np.float64) for name in ("mu", "sigma", "features")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # an unreadable or foreign cache is recomputed and overwritten, like a stale one
    features = np.asarray(compute_fn(), np.float64)
    mu, sigma = feature_stats(features)
    os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
    tmp = cache_path + ".tmp"
    with open(tmp, "wb") as f:
        np.savez(f, key=np.array(key), mu=mu, sigma=sigma, features=features)
    os.replace(tmp, cache_path)
    return {"mu": mu, "sigma": sigma, "features": features}
