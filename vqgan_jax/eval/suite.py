"""How good a run is, in numbers: reconstruction on held-out images, generation (the shared block of
`eval.generation`: real-vs-fake classifier, fd_vgg16, kd_vgg16, precision / recall, FID / KID / IS with
Inception weights). `python -m vqgan_jax.evaluate` is the command line.

    evaluate_run(workdir, ...)      a run folder: the stage-1 part's held-out reconstructions (VQGAN, VAE),
                                    and samples of its generator (`sampling.generators`) when it has one
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


# -- generation: the shared block lives in eval.generation; these names stay importable from here --------
from vqgan_jax.eval.generation import DEFAULT_INCEPTION_WEIGHTS, resolve_inception  # noqa: E402


# -- whole evaluations -------------------------------------------------------------------------------
def _data_config(workdir: str, data_dir: str | None, part: str = "vqgan"):
    config = runs.read_config(workdir, part)
    data_cfg = config.data
    if data_dir:
        if not os.path.isdir(data_dir):
            raise UserError(f"--data_dir {data_dir}: no such folder")
        data_cfg.source = "folder"  # the keys exist, so the locked config takes the new values
        data_cfg.dir = data_dir
    return data_cfg


def _vqgan_block(workdir: str, real: np.ndarray, batch_size: int, out_dir: str, result: dict) -> None:
    """The VQGAN's held-out reconstructions and codebook (result['reconstruction'], pictures)."""
    from vqgan_jax.viz import codebook
    vq = loading.load_vqgan(workdir)
    recs, ids = reconstruct_all(vq, real, batch_size)
    result["vqgan_step"] = int(vq.step)
    result["reconstruction"] = reconstruction_metrics(real, recs, ids, int(vq.config.quantizer.num_codes),
                                                      with_lpips=min(real.shape[1:3]) >= 16)
    shown = min(16, len(real))
    pics = result["pictures"]
    pics["reconstructions"] = os.path.join(out_dir, "reconstructions.png")
    images_lib.save_png(pics["reconstructions"], images_lib.originals_over_reconstructions(real[:shown], recs[:shown]))
    pics["codebook"] = codebook.write_codebook(workdir, os.path.join(out_dir, "codebook.png"), vqgan=vq)


def _vae_block(workdir: str, real: np.ndarray, labels: np.ndarray, batch_size: int, seed: int, out_dir: str,
               result: dict) -> None:
    """The VAE's held-out ELBO, reconstructions and latent map (result['reconstruction'], pictures)."""
    from vqgan_jax.eval import vae_metrics
    from vqgan_jax.sampling import vae as vae_sampling
    from vqgan_jax.viz import latent_map
    vae = loading.load_vae(workdir)
    lp = lpips_distances if min(real.shape[1:3]) >= 16 else None
    recs, metrics = vae_metrics.reconstruct_and_score(vae, real, labels, batch_size=batch_size, seed=seed,
                                                      lpips_fn=lp)
    result["vae_step"] = int(vae.step)
    result["reconstruction"] = metrics
    shown = min(16, len(real))
    pics = result["pictures"]
    pics["reconstructions"] = os.path.join(out_dir, "reconstructions.png")
    images_lib.save_png(pics["reconstructions"], images_lib.originals_over_reconstructions(real[:shown], recs[:shown]))
    if len(real) >= 2:
        means = vae_sampling.encode_means(vae, real, labels if vae.model.num_classes else None)
        pics["latent_map"] = latent_map.latent_map(means, labels, os.path.join(out_dir, "latent_map.png"))


def evaluate_run(workdir: str, *, data_dir: str | None = None, split: str = "eval", num_samples: int = 1000,
                 max_images: int | None = None, inception_weights: str | None = None,
                 fid: bool | None = None, classifier_epochs: int = 10, seed: int = 0, batch_size: int = 32,
                 out_dir: str | None = None, progress: bool = True, generator: str | None = None) -> dict:
    """Evaluates the run in `workdir`; writes pictures into out_dir (default DIR/eval) and returns the dict
    {'workdir', 'generator', 'vqgan_step' | 'vae_step', 'reconstruction': {...} | None,
    'generation': {...} | None, 'classifier': {...} | None, 'pictures': {name: path}}.

    reconstruction: the stage-1 part's held-out block (VQGAN: PSNR, SSIM, L1, LPIPS, codebook; VAE: the
    same plus negative ELBO, bits per dimension, KL, active units), None for a generator without one.
    generation: `eval.generation`'s block, the same keys for every generator (`sampling.generators`;
    generator: its name, default the run's own), None when the run has none or num_samples is 0.
    """
    from vqgan_jax.eval import generation as gen_lib
    from vqgan_jax.sampling import generators
    from vqgan_jax.viz import training
    has = {part: os.path.isdir(runs.stage_dir(workdir, part)) for part in ("vqgan", "vae")}
    name = generators.resolve(workdir, generator)
    stage1 = "vqgan" if has["vqgan"] else "vae" if has["vae"] else None
    if stage1 is None and name is None:
        runs.require_checkpoint(workdir, "vqgan", f"train stage 1 first: python train.py --config ... --workdir {workdir}")
    if stage1:
        runs.require_checkpoint(workdir, stage1, f"train it first: python train.py --config ... --workdir {workdir}")
    out_dir = out_dir or os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    gen_lib.resolve_inception(inception_weights, fid)  # a missing file asked for is an error before any work
    data_part = stage1 or generators.PARTS.get(name, name)
    data_cfg = _data_config(workdir, data_dir, data_part)
    real, labels = load_split(data_cfg, split, max_images)
    result = {"workdir": os.path.abspath(workdir), "generator": name, "split": split,
              "data": {"source": data_cfg.source, "dir": data_cfg.get("dir"), "tfds_name": data_cfg.get("tfds_name")},
              "reconstruction": None, "generation": None, "classifier": None, "pictures": {}}
    if stage1 == "vqgan":
        _vqgan_block(workdir, real, batch_size, out_dir, result)
    elif stage1 == "vae":
        _vae_block(workdir, real, labels, batch_size, seed, out_dir, result)
    pics = result["pictures"]
    pics.update(training.write_training_pictures(workdir, os.path.join(out_dir, "training")))

    part = generators.PARTS.get(name, name) if name else None
    if name and num_samples > 0 and os.path.isdir(runs.checkpoint_dir(workdir, part)):
        options = {"progress": progress} if name == "prior" else {}
        fake_u8 = generators.generate(workdir, name, num_samples, seed, 16, **options)
        pics["samples"] = images_lib.write_grid(fake_u8[:64], os.path.join(out_dir, "samples.png"))
        spec = json.dumps(result["data"], sort_keys=True) + split + str(max_images)
        gen, clf = gen_lib.evaluate_generation(
            fake_u8, images_lib.to_uint8(real), seed=seed, classifier_epochs=classifier_epochs,
            inception_weights=inception_weights, fid=fid, inception_cache=os.path.join(out_dir, "inception_real.npz"),
            cache_parts=(spec,), out_dir=out_dir)
        gen = {"num_samples": int(len(fake_u8)), **{k: None for k in gen_lib.INCEPTION_KEYS}, **gen}
        if gen["fid"] is None:
            gen["skipped"] = ("no Inception weights: FID/KID/IS need `python -m vqgan_jax.inception download` "
                              f"(looked for {inception_weights or DEFAULT_INCEPTION_WEIGHTS})")
        result["generation"] = gen
        result["classifier"] = clf
        pics["classifier_confusion"] = os.path.join(out_dir, "classifier_confusion.png")
    return result


def compare_folders(real_dir: str, fake_dir: str, *, image_size: int | None = None,
                    inception_weights: str | None = None, fid: bool | None = None, max_images: int | None = None,
                    classifier_epochs: int = 10, seed: int = 0, out_dir: str | None = None,
                    vgg_size: int | None = None) -> dict:
    """Any two image folders, scored by the generation block every generator gets (`eval.generation`):
    the real-vs-fake classifier, fd_vgg16 / kd_vgg16 and precision / recall on VGG16 features, and FID /
    KID / IS when the Inception weights are there. Both folders are centre-cropped to image_size (default:
    the first real image's short side). vgg_size: VGG16's input side (default 224; tests use less).

    Returns {'real', 'fake', 'image_size', 'generation': {...}, 'classifier': {...}}."""
    from vqgan_jax.eval import generation as gen_lib
    from vqgan_jax.eval import vgg_features
    resolve_inception(inception_weights, fid)  # a missing file asked for is an error before any work
    size = image_size or first_image_size(real_dir)
    real = load_folder(real_dir, size, max_images)
    fake = load_folder(fake_dir, size, max_images)
    parts = (hashlib.sha256("\n".join(sorted(os.listdir(real_dir))).encode()).hexdigest(), str(size))
    gen, clf = gen_lib.evaluate_generation(
        images_lib.to_uint8(fake), images_lib.to_uint8(real), seed=seed, classifier_epochs=classifier_epochs,
        inception_weights=inception_weights, fid=fid, cache_parts=parts,
        vgg_size=vgg_size or vgg_features.VGG_SIZE, out_dir=out_dir)
    return {"real": os.path.abspath(real_dir), "fake": os.path.abspath(fake_dir), "image_size": size,
            "generation": gen, "classifier": clf}


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
        step = result.get("vqgan_step", result.get("vae_step"))
        lines.append(f"reconstruction ({rec['num_images']} held-out images, stage-1 step {step})")
        for k in ("psnr", "ssim", "l1", "lpips", "codebook_usage", "perplexity", "dead_codes", "neg_elbo_nats_per_dim",
                  "bits_per_dim", "rec_nll", "kl", "active_units", "latent_dims"):
            if k in rec:
                lines.append(f"  {k:<22}{_fmt(rec[k])}")
    gen = result.get("generation")
    if gen:
        who = f", generator {result['generator']}" if result.get("generator") else ""
        lines.append(f"generation ({gen.get('num_fake', gen.get('num_samples'))} samples{who}; fd_vgg16 is not FID)")
        for k in ("classifier_accuracy", "fd_vgg16", "kd_vgg16_mean", "kd_vgg16_std", "precision", "recall",
                  "fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std"):
            if k in gen:
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
