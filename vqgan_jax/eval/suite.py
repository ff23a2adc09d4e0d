"""How good a run is, in numbers: reconstruction on held-out images, generation (FID, KID, Inception
Score) and the Keras real-vs-fake CNN study's classifier. `python -m vqgan_jax.evaluate` is the command line.

    evaluate_run(workdir, ...)      a run folder: held-out reconstructions, and samples when it has a prior
    compare_folders(real, fake)     any two image folders: FID / KID / IS and the classifier

Both return a JSON-ready dict (the keys are listed in README.md, "Evaluation") and write their pictures.
Images are float32 (N, H, W, 3) in [-1, 1] throughout, as everywhere in vqgan_jax.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.eval import image_metrics
from vqgan_jax.train import loading, runs
from vqgan_jax.viz import images as images_lib

# Where `python -m vqgan_jax.inception download` puts the FID network unless told otherwise.
DEFAULT_INCEPTION_WEIGHTS = os.path.join(os.path.expanduser("~"), ".cache", "vqgan_jax", "inception_fid.npz")


# -- images ------------------------------------------------------------------------------------------
def load_split(data_cfg, split: str = "eval", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every image of a split through the run's own tf.data pipeline (centre crop, no flip, one pass):
    (float32 (N, S, S, 3), int32 (N,) labels). Folders hold out by file-name hash (data.eval_fraction),
    TFDS uses its test split, so training never saw these."""
    from vqgan_jax.data import pipeline as data_lib  # tf.data only where data is read
    ds = data_lib.make_dataset(data_cfg, split=split, global_batch_size=1, seed=0, training=False, repeat=False)
    xs, ys = [], []
    for batch in data_lib.iterate_numpy(ds):
        xs.append(batch["image"][0])
        ys.append(batch["label"][0])
        if limit and len(xs) >= limit:
            break
    if not xs:
        raise UserError(f"the {split} split of data.source={data_cfg.source} is empty")
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.int32)


def load_folder(path: str, size: int, limit: int | None = None) -> np.ndarray:
    """All images of a folder (sorted names), RGB, short side resized to `size` and centre-cropped:
    float32 (N, size, size, 3) in [-1, 1]. A missing or empty folder is a UserError."""
    from vqgan_jax.data.images import list_image_files, load_image
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such folder")
    files = list_image_files(path, limit or 10**9)
    return np.stack([load_image(f, size) for f in files])


def first_image_size(path: str) -> int:
    """Short side of the first image in a folder (the size `compare_folders` crops both folders to)."""
    from PIL import Image

    from vqgan_jax.data.images import list_image_files
    if not os.path.isdir(path):
        raise UserError(f"{path}: no such folder")
    with Image.open(list_image_files(path, 1)[0]) as im:
        return int(min(im.size))


def _padded_batches(n: int, batch_size: int):
    """(start, stop) of fixed-size batches over n items; the last is padded by the caller so every batch
    has one shape and each jitted function compiles once."""
    for start in range(0, n, batch_size):
        yield start, min(start + batch_size, n)


def _pad_to(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) == size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


# -- reconstruction ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def _lpips_fn():
    from vqgan_jax.losses import lpips as lpips_lib
    model = lpips_lib.LPIPS()
    params = lpips_lib.load_lpips_params()
    fn = jax.jit(lambda a, b: model.apply(params, a, b))
    return fn


def lpips_distances(x: np.ndarray, y: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """LPIPS-VGG16 per image pair, float64 (N,) (H, W >= 16)."""
    fn = _lpips_fn()
    out = []
    for a, b in _padded_batches(len(x), batch_size):
        d = fn(jnp.asarray(_pad_to(x[a:b], batch_size)), jnp.asarray(_pad_to(y[a:b], batch_size)))
        out.append(np.asarray(d, np.float64)[: b - a])
    return np.concatenate(out)


def reconstruct_all(vq: loading.Loaded, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The run's reconstructions (EMA weights when present), clipped: (float32 (N, S, S, 3), int code ids
    (N, h, w)). Batches are padded to one size so one program serves them all."""
    recs, ids = [], []
    for a, b in _padded_batches(len(images), batch_size):
        x_hat, idx = vq.run("reconstruct_with_ids", _pad_to(images[a:b], batch_size))
        recs.append(np.clip(np.asarray(x_hat, np.float32), -1.0, 1.0)[: b - a])
        ids.append(np.asarray(idx)[: b - a])
    return np.concatenate(recs), np.concatenate(ids)


def reconstruction_metrics(images: np.ndarray, recs: np.ndarray, ids: np.ndarray, num_codes: int,
                           *, with_lpips: bool = True) -> dict:
    """Means over held-out images of PSNR (dB, [0, 255] scale), SSIM, L1 ([-1, 1] scale) and LPIPS, and
    codebook use over all their tokens: usage (fraction of codes used), perplexity, dead codes."""
    counts = np.bincount(ids.ravel(), minlength=num_codes)
    book = image_metrics.codebook_stats(counts)
    psnr = image_metrics.psnr(images, recs)
    out = {"num_images": int(len(images)),
           "psnr": float(np.mean(np.minimum(psnr, 100.0))),  # an exact copy is capped at 100 dB, as in training
           "ssim": float(np.mean(image_metrics.ssim(images, recs))),
           "l1": float(np.mean(image_metrics.l1(images, recs))),
           "lpips": float(np.mean(lpips_distances(images, recs))) if with_lpips else None,
           "codebook_usage": book["usage"], "perplexity": book["perplexity"], "dead_codes": book["dead_codes"],
           "codes_used": book["used"], "num_codes": int(num_codes)}
    return out


# -- generation --------------------------------------------------------------------------------------
def inception_metrics(real_u8: np.ndarray, fake_u8: np.ndarray, weights: str, cache_path: str | None,
                      cache_parts: tuple[str, ...] = ()) -> dict:
    """FID and KID of fake against real, and the Inception Score of fake, with clean-fid's resizing.

    real_u8, fake_u8: uint8 (N, H, W, 3). The real set's features are cached in cache_path (an npz) under
    a key made of cache_parts and the weights file's hash, so a second evaluation skips them."""
    from vqgan_jax.eval import fid
    from vqgan_jax.interop import inception_weights as inception
    variables = inception.load_inception_params(weights)
    feats = fid.InceptionFeatures(variables)
    key = fid.cache_key(*cache_parts, inception.file_sha256(weights), str(real_u8.shape))

    def real_features():
        return feats.from_images(real_u8)[0]

    if cache_path:
        real = fid.cached_real_stats(cache_path, key, real_features)
    else:
        f = real_features()
        mu, sigma = fid.feature_stats(f)
        real = {"mu": mu, "sigma": sigma, "features": f}
    fake_feats, fake_logits = feats.from_images(fake_u8)
    mu, sigma = fid.feature_stats(fake_feats)
    kid_mean, kid_std = fid.kernel_inception_distance(real["features"], fake_feats)
    is_mean, is_std = fid.inception_score(fake_logits, splits=min(10, len(fake_logits)))
    return {"fid": fid.frechet_distance(real["mu"], real["sigma"], mu, sigma), "kid_mean": kid_mean,
            "kid_std": kid_std, "inception_score_mean": is_mean, "inception_score_std": is_std,
            "num_real": int(len(real_u8)), "num_fake": int(len(fake_u8))}


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


def classifier_test(real: np.ndarray, fake: np.ndarray, out_dir: str | None, *, seed: int = 0,
                    epochs: int = 10) -> dict:
    """The Keras study's real-vs-fake CNN on its own train/test split (see `classifier.real_vs_fake`); writes the
    text report and the confusion-matrix PNG into out_dir. 0.5 accuracy: it cannot tell them apart."""
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


# -- whole evaluations -------------------------------------------------------------------------------
def _data_config(workdir: str, data_dir: str | None):
    config = runs.read_config(workdir, "vqgan")
    data_cfg = config.data
    if data_dir:
        if not os.path.isdir(data_dir):
            raise UserError(f"--data_dir {data_dir}: no such folder")
        data_cfg.source = "folder"  # the keys exist, so the locked config takes the new values
        data_cfg.dir = data_dir
    return data_cfg


def evaluate_run(workdir: str, *, data_dir: str | None = None, split: str = "eval", num_samples: int = 1000,
                 max_images: int | None = None, inception_weights: str | None = None,
                 fid: bool | None = None, classifier_epochs: int = 10, seed: int = 0, batch_size: int = 32,
                 out_dir: str | None = None, progress: bool = True) -> dict:
    """Evaluates the run in `workdir`; writes pictures into out_dir (default DIR/eval) and returns the dict
    {'workdir', 'vqgan_step', 'reconstruction': {...}, 'generation': {...} | None, 'classifier': {...} | None,
    'pictures': {name: path}}. The prior's part is None when the run has no prior."""
    from vqgan_jax.sampling import draw
    from vqgan_jax.viz import codebook, training
    runs.require_checkpoint(workdir, "vqgan", f"train stage 1 first: python train.py --config ... --workdir {workdir}")
    out_dir = out_dir or os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    weights = resolve_inception(inception_weights, fid)
    data_cfg = _data_config(workdir, data_dir)
    vq = loading.load_vqgan(workdir)  # loaded once, shared with the codebook and the samples
    config, step = vq.config, vq.step
    real, _ = load_split(data_cfg, split, max_images)
    recs, ids = reconstruct_all(vq, real, batch_size)
    result = {"workdir": os.path.abspath(workdir), "vqgan_step": int(step), "split": split,
              "data": {"source": data_cfg.source, "dir": data_cfg.get("dir"), "tfds_name": data_cfg.get("tfds_name")},
              "reconstruction": reconstruction_metrics(real, recs, ids, int(config.quantizer.num_codes),
                                                       with_lpips=min(real.shape[1:3]) >= 16),
              "generation": None, "classifier": None, "pictures": {}}
    pics = result["pictures"]
    shown = min(16, len(real))
    pics["reconstructions"] = os.path.join(out_dir, "reconstructions.png")
    images_lib.save_png(pics["reconstructions"], images_lib.originals_over_reconstructions(real[:shown], recs[:shown]))
    pics["codebook"] = codebook.write_codebook(workdir, os.path.join(out_dir, "codebook.png"), vqgan=vq)
    pics.update(training.write_training_pictures(workdir, os.path.join(out_dir, "training")))

    if os.path.isdir(runs.checkpoint_dir(workdir, "prior")) and num_samples > 0:
        fake_u8 = draw.draw_samples(workdir, num=num_samples, seed=seed, batch_size=16, progress=progress, vqgan=vq)
        pics["samples"] = images_lib.write_grid(fake_u8[:64], os.path.join(out_dir, "samples.png"))
        real_u8 = images_lib.to_uint8(real)
        gen = {"num_samples": int(len(fake_u8)), "fid": None, "kid_mean": None, "kid_std": None,
               "inception_score_mean": None, "inception_score_std": None}
        if weights:
            spec = json.dumps(result["data"], sort_keys=True) + split + str(max_images)
            gen.update(inception_metrics(real_u8, fake_u8, weights, os.path.join(out_dir, "inception_real.npz"),
                                         (spec,)))
        else:
            gen["skipped"] = ("no Inception weights: FID/KID/IS need `python -m vqgan_jax.inception download` "
                              f"(looked for {inception_weights or DEFAULT_INCEPTION_WEIGHTS})")
        result["generation"] = gen
        fake = fake_u8.astype(np.float32) / 127.5 - 1.0
        result["classifier"] = classifier_test(real, fake, out_dir, seed=seed, epochs=classifier_epochs)
        pics["classifier_confusion"] = os.path.join(out_dir, "classifier_confusion.png")
    return result


def compare_folders(real_dir: str, fake_dir: str, *, image_size: int | None = None,
                    inception_weights: str | None = None, fid: bool | None = None, max_images: int | None = None,
                    classifier_epochs: int = 10, seed: int = 0, out_dir: str | None = None) -> dict:
    """Any two image folders: FID / KID / IS (when Inception weights are there) and the real-vs-fake
    classifier. Both folders are centre-cropped to image_size (default: the first real image's short side)."""
    weights = resolve_inception(inception_weights, fid)
    size = image_size or first_image_size(real_dir)
    real = load_folder(real_dir, size, max_images)
    fake = load_folder(fake_dir, size, max_images)
    result = {"real": os.path.abspath(real_dir), "fake": os.path.abspath(fake_dir), "image_size": size,
              "generation": None, "classifier": None}
    if weights:
        parts = (hashlib.sha256("\n".join(sorted(os.listdir(real_dir))).encode()).hexdigest(), str(size))
        result["generation"] = inception_metrics(images_lib.to_uint8(real), images_lib.to_uint8(fake), weights,
                                                 None, parts)
    result["classifier"] = classifier_test(real, fake, out_dir, seed=seed, epochs=classifier_epochs)
    return result


# -- reporting ---------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(result: dict) -> str:
    """The printed summary: one `name  value` line per metric, grouped by section."""
    lines = []
    rec = result.get("reconstruction")
    if rec:
        lines.append(f"reconstruction ({rec['num_images']} held-out images, stage-1 step {result.get('vqgan_step')})")
        for k in ("psnr", "ssim", "l1", "lpips", "codebook_usage", "perplexity", "dead_codes"):
            lines.append(f"  {k:<22}{_fmt(rec[k])}")
    gen = result.get("generation")
    if gen:
        lines.append(f"generation ({gen.get('num_fake', gen.get('num_samples'))} samples)")
        for k in ("fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std"):
            lines.append(f"  {k:<22}{_fmt(gen.get(k))}")
        if gen.get("skipped"):
            lines.append(f"  ({gen['skipped']})")
    clf = result.get("classifier")
    if clf:
        lines.append(f"real-vs-fake classifier ({clf['num_test']} test images; 0.5 = cannot tell them apart)")
        lines.append(f"  {'accuracy':<22}{_fmt(clf['accuracy'])}")
        for name in ("real", "fake"):
            c = clf["classes"][name]
            lines.append(f"  {name:<22}precision {c['precision']:.3f}  recall {c['recall']:.3f}  f1 {c['f1']:.3f}")
        lines.append(f"  confusion (rows true real/fake, cols predicted): {clf['confusion']}")
    for name, path in sorted(result.get("pictures", {}).items()):
        lines.append(f"picture {name}: {path}")
    return "\n".join(lines)


def write_json(result: dict, path: str) -> str:
    """Writes the result atomically (tmp + rename) as indented JSON."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(result, f, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    os.replace(path + ".tmp", path)
    return path
