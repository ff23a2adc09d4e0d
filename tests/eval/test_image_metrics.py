"""PSNR, SSIM, L1 and codebook statistics against hand-computed values and a slow loop reference."""
import math

import numpy as np
import pytest

from vqgan_jax.eval import image_metrics as im
from vqgan_jax.errors import UserError


def _const(value, n=1, size=16):
    return np.full((n, size, size, 3), value, np.float64)


def test_psnr_constant_offsets_table():
    x = np.zeros((2, 8, 8, 3))
    # On the [0, 255] scale an offset of 0.1 is 12.75 = 255 / 20 and 0.2 is 25.5 = 255 / 10, so the MSE is
    # (255 / 20)^2 and (255 / 10)^2: PSNR = 20 log10(20) and exactly 20 dB.
    y = np.stack([np.full((8, 8, 3), 0.1), np.full((8, 8, 3), -0.2)])
    out = im.psnr(x, y)
    assert out.shape == (2,) and out.dtype == np.float64
    np.testing.assert_allclose(out, [20 * math.log10(20), 20.0], rtol=1e-12)


def test_psnr_clips_the_reconstruction_and_identical_is_inf():
    # y = -3 is clipped to -1: an error of 0.5 -> 63.75 = 255 / 4 -> 20 log10(4) dB.
    assert im.psnr(_const(-0.5), _const(-3.0))[0] == pytest.approx(20 * math.log10(4), rel=1e-12)
    # y = 1.5 is clipped to 1 = x: no error left, PSNR inf (documented; no cap).
    assert im.psnr(_const(1.0), _const(1.5))[0] == math.inf
    assert np.all(np.isinf(im.psnr(_const(0.3, n=3), _const(0.3, n=3))))


def test_ssim_identical_is_one():
    x = np.random.default_rng(0).uniform(-1, 1, (3, 16, 20, 3))
    np.testing.assert_allclose(im.ssim(x, x), 1.0, rtol=1e-12)


def test_ssim_constant_images_closed_form():
    # Constant windows: means a and b, all (co)variances 0, so the structure term is C2 / C2 = 1 and
    # SSIM = (2ab + C1) / (a^2 + b^2 + C1), with a, b on the [0, 255] scale and C1 = (0.01 * 255)^2.
    a, b, c1 = 127.5, 191.25, 6.5025  # x = 0.0 and y = 0.5 in [-1, 1]
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    # (48768.75 + 6.5025) / (16256.25 + 36576.5625 + 6.5025), worked out by hand:
    assert expected == pytest.approx(0.92309, abs=1e-5)
    np.testing.assert_allclose(im.ssim(_const(0.0), _const(0.5)), [expected], rtol=1e-12)
    # Black against white: a = 0, b = 255.
    np.testing.assert_allclose(im.ssim(_const(-1.0), _const(1.0)), [c1 / (255.0 ** 2 + c1)], rtol=1e-9)


def _ssim_loops(x, y):
    """Slow reference for one image pair: float (H, W, C) in [-1, 1] -> float. Explicit loops over channels
    and every 11x11 window inside the image, with the 2-D Gaussian weights built directly."""
    x, y = 127.5 * (x + 1), 127.5 * (np.clip(y, -1, 1) + 1)
    t = np.arange(-5, 6)
    g = np.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    g /= g.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for c in range(x.shape[2]):
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                wx, wy = x[i:i + 11, j:j + 11, c], y[i:i + 11, j:j + 11, c]
                mx, my = np.sum(g * wx), np.sum(g * wy)
                vx, vy = np.sum(g * (wx - mx) ** 2), np.sum(g * (wy - my) ** 2)
                cxy = np.sum(g * (wx - mx) * (wy - my))
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(values))


def test_ssim_matches_slow_loop_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (2, 16, 16, 3))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1.2, 1.2)  # some values outside [-1, 1] test the clip
    y[1] = 0.5 * x[1] + 0.2 * rng.uniform(-1, 1, (16, 16, 3))  # a second, different distortion
    out = im.ssim(x, y)
    expected = [_ssim_loops(x[k], y[k]) for k in range(2)]
    assert 0.0 < min(expected) and max(expected) < 1.0  # a real test, not two trivial ones
    np.testing.assert_allclose(out, expected, rtol=1e-10)


def test_ssim_window_weights():
    w = im.gaussian_window_1d()
    assert w.shape == (11,) and w.sum() == pytest.approx(1.0)
    assert w[5] / w[6] == pytest.approx(math.exp(0.5 / 1.5 ** 2))


def test_shape_errors():
    with pytest.raises(UserError, match="at least 11x11"):
        im.ssim(_const(0.0, size=10), _const(0.0, size=10))
    with pytest.raises(UserError, match="one shape"):
        im.psnr(_const(0.0), _const(0.0, size=8))


def test_l1_table():
    x = np.zeros((2, 1, 2, 3))
    y = np.zeros((2, 1, 2, 3))
    y[0, 0, 0] = [0.6, -0.6, 0.0]  # 1.2 / 6 elements
    y[1] = 2.0  # not clipped: the training loss's distance
    np.testing.assert_allclose(im.l1(x, y), [0.2, 2.0], rtol=1e-12)


def test_codebook_stats_tables():
    assert im.codebook_stats([4, 0, 4, 0]) == {"usage": 0.5, "perplexity": pytest.approx(2.0), "dead_codes": 2,
                                               "used": 2}
    assert im.codebook_stats(np.ones(8, np.int64))["perplexity"] == pytest.approx(8.0)
    s = im.codebook_stats(np.array([3, 1, 0]))
    assert s["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert (s["used"], s["dead_codes"], s["usage"]) == (2, 1, pytest.approx(2 / 3))
    assert im.codebook_stats([0, 0, 9])["perplexity"] == pytest.approx(1.0)
    assert isinstance(s["used"], int) and isinstance(s["perplexity"], float)  # JSON-ready
    for bad in ([0, 0], [], [1, -1]):
        with pytest.raises(UserError):
            im.codebook_stats(bad)
