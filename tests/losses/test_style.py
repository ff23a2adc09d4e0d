"""losses.style against hand computations: Gram matrices, content and style losses, total variation."""
import numpy as np

from vqgan_jax.losses import style


def test_gram_by_hand():
    f = np.arange(2 * 2 * 3 * 2, dtype=np.float32).reshape(2, 2, 3, 2) / 10   # (B, H, W, C)
    g = np.asarray(style.gram(f))
    assert g.shape == (2, 2, 2)
    for b in range(2):
        flat = f[b].reshape(6, 2)                                              # (H*W, C)
        want = np.array([[flat[:, c] @ flat[:, d] for d in range(2)] for c in range(2)]) / (2 * 3 * 2)
        np.testing.assert_allclose(g[b], want, rtol=1e-6)
    # a single pixel of ones in C channels: every entry 1 / C
    np.testing.assert_allclose(style.gram(np.ones((1, 1, 1, 4))), np.full((1, 4, 4), 0.25))


def test_content_and_style_losses():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(style.content_loss(f, f), np.zeros(3))
    np.testing.assert_allclose(style.content_loss(f, f + 2.0), np.full(3, 4.0), rtol=1e-6)
    np.testing.assert_allclose(style.style_loss(f, style.gram(f)), np.zeros(3), atol=1e-7)
    # one style Gram (1, C, C) for a batch; a spatially shuffled map has the same Gram matrix
    shuffled = f[:, ::-1, ::-1, :].copy()
    np.testing.assert_allclose(style.style_loss(shuffled, style.gram(f[:1]))[0], 0.0, atol=1e-7)
    g = np.asarray(style.gram(f[1:2]))
    want = np.mean((np.asarray(style.gram(f[:1])) - g) ** 2)
    np.testing.assert_allclose(style.style_loss(f[:1], g)[0], want, rtol=1e-5)


def test_total_variation_by_hand():
    x = np.zeros((2, 3, 3, 1), np.float32)
    x[0, 1, 1, 0] = 1.0          # one bright pixel: 4 neighbour differences of 1
    x[1, :, 2, 0] = 0.5          # a vertical edge: 3 horizontal differences of 0.5
    np.testing.assert_allclose(style.total_variation(x), [4.0, 3 * 0.25])
    np.testing.assert_array_equal(style.total_variation(np.ones((1, 5, 4, 3))), [0.0])
