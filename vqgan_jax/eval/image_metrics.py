"""Reconstruction metrics on images in [-1, 1]: PSNR, SSIM, L1, and codebook statistics.

Everything here is host-side numpy in float64, the precision skimage uses, so the numbers match
`skimage.metrics.peak_signal_noise_ratio` / `structural_similarity` without depending on scikit-image
(checked once against scikit-image 0.26: equal to 1e-15 on random 32x24 images).
Images are float arrays (N, H, W, C) in [-1, 1]: `x` is the reference (the original), `y` the
reconstruction. Per-image functions return float64 (N,); the reported number is their mean over images.
"""
from __future__ import annotations

import numpy as np

from vqgan_jax.errors import UserError

DATA_RANGE = 255.0  # PSNR and SSIM are computed on the [0, 255] scale, as image papers report them

# SSIM constants of Wang et al. (2004), with skimage's Gaussian window: sigma 1.5 truncated at 3.5
# sigma gives radius int(3.5 * 1.5 + 0.5) = 5, an 11x11 window.
SSIM_SIGMA = 1.5
SSIM_RADIUS = 5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Checks a (reference, reconstruction) pair: same shape, (N, H, W, C). Returns float64 copies."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 4 or x.shape != y.shape:
        raise UserError(f"image metrics need two arrays of one shape (N, H, W, C); got {x.shape} and {y.shape}")
    return x, y


def to_255(x: np.ndarray) -> np.ndarray:
    """float (...) in [-1, 1] -> float64 (...) in [0, 255]: 127.5 * (x + 1), not rounded."""
    return 127.5 * (np.asarray(x, np.float64) + 1.0)


def psnr(x, y) -> np.ndarray:
    """Peak signal-to-noise ratio per image, in dB on the [0, 255] scale.

    Args:
      x: float (N, H, W, C) originals in [-1, 1].
      y: float (N, H, W, C) reconstructions; clipped to [-1, 1] (a decoder may overshoot, a saved image
        cannot), not rounded to integers.
    Returns:
      float64 (N,): 10 * log10(255^2 / MSE). An image reconstructed exactly has MSE 0 and PSNR inf (as in
      skimage); no cap, because any finite cap would be an invented number. A mean over images that holds
      one inf is inf.
    """
    x, y = _pair(x, y)
    mse = np.mean(np.square(to_255(x) - to_255(np.clip(y, -1.0, 1.0))), axis=(1, 2, 3))  # (N,)
    with np.errstate(divide="ignore"):  # mse == 0 -> inf, documented above
        return 10.0 * np.log10(DATA_RANGE ** 2 / mse)


def gaussian_window_1d(sigma: float = SSIM_SIGMA, radius: int = SSIM_RADIUS) -> np.ndarray:
    """float64 (2 * radius + 1,) Gaussian weights summing to 1 (scipy.ndimage.gaussian_filter's kernel).

    The 2-D SSIM window is the outer product of this with itself, so filtering rows then columns equals
    filtering with the 11x11 window.
    """
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _valid_filter(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """float64 (N, H, W, C) -> (N, H - k + 1, W - k + 1, C): the weighted mean of every k x k window that
    fits inside the image (no padding), k = len(w). Separable: a sum of k shifted slices per axis."""
    k = len(w)
    h, wd = a.shape[1] - k + 1, a.shape[2] - k + 1
    rows = sum(w[i] * a[:, i:i + h] for i in range(k))  # (N, h, W, C)
    return sum(w[j] * rows[:, :, j:j + wd] for j in range(k))  # (N, h, w, C)


def ssim(x, y) -> np.ndarray:
    """Structural similarity per image (Wang et al. 2004) on the [0, 255] scale.

    An 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, population (not sample) variances, per
    channel, over the windows that fit inside the image (no padding), averaged over positions and channels.
    This equals skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1) on each image: skimage filters with
    reflect padding but then crops the 5-pixel border, which leaves exactly the valid windows.

    Args:
      x: float (N, H, W, C) originals in [-1, 1], H and W at least 11.
      y: float (N, H, W, C) reconstructions; clipped to [-1, 1] like in `psnr`.
    Returns:
      float64 (N,), 1.0 for identical images.
    """
    x, y = _pair(x, y)
    k = 2 * SSIM_RADIUS + 1
    if x.shape[1] < k or x.shape[2] < k:
        raise UserError(f"SSIM needs images of at least {k}x{k} pixels; got {x.shape[1]}x{x.shape[2]}")
    x, y = to_255(x), to_255(np.clip(y, -1.0, 1.0))
    w = gaussian_window_1d()
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    # Local means and (co)variances of every window, each (N, H - 10, W - 10, C).
    mx, my = _valid_filter(x, w), _valid_filter(y, w)
    vx = _valid_filter(x * x, w) - mx * mx
    vy = _valid_filter(y * y, w) - my * my
    cxy = _valid_filter(x * y, w) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))  # every channel has as many windows, so one mean = mean of channel means


def l1(x, y) -> np.ndarray:
    """Mean absolute error per image on the [-1, 1] scale (the training loss's scale, `eval/rec`).

    Args:
      x, y: float (N, H, W, C). Not clipped: this is the distance the decoder is trained on.
    Returns:
      float64 (N,).
    """
    x, y = _pair(x, y)
    return np.mean(np.abs(x - y), axis=(1, 2, 3))


def codebook_stats(counts) -> dict:
    """Codebook statistics from a histogram of code indices.

    Args:
      counts: int (K,) how often each of the K codes was chosen, e.g.
        np.bincount(indices.ravel(), minlength=K).
    Returns:
      JSON-ready dict: 'used' (int, codes chosen at least once), 'dead_codes' (int, codes never chosen),
      'usage' (float, used / K), 'perplexity' (float, exp of the entropy of the code distribution in nats:
      K when all codes are equally used, 1 when one code takes everything).
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise UserError(f"codebook_stats needs a 1-D histogram with one count per code; got shape {counts.shape}")
    if np.any(counts < 0):
        raise UserError("codebook_stats got negative counts; pass a histogram of code indices")
    total = counts.sum()
    if total == 0:
        raise UserError("codebook_stats got an empty histogram: no code indices were counted")
    p = counts[counts > 0].astype(np.float64) / total  # 0 log 0 = 0, so unused codes drop out
    used = int(np.count_nonzero(counts))
    return {"usage": used / counts.size, "perplexity": float(np.exp(-np.sum(p * np.log(p)))),
            "dead_codes": int(counts.size - used), "used": used}
