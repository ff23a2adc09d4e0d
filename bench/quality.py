"""Held-out reconstruction quality of a stage-1 run on an image folder; prints one JSON line.

    python bench/quality.py --workdir runs/f64q --data_dir ../shared/data/flowers64 \
        [--export_holdout /tmp/f64-holdout] [--grid runs/f64q/holdout.png]

The held-out images are the run's own split (data.eval_fraction, by a hash of the file name), so
training never saw them. Scoring follows the PyTorch peer's definitions (shared/bench-peer/common.py):
PSNR per image between the uint8 original and the reconstruction clipped to [-1, 1] (no rounding),
averaged over images; codes used = distinct code ids over all held-out tokens. `--export_holdout`
writes symlinks to the same files so the peer can be scored on exactly this split.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder with a trained stage 1.")
_DATA = flags.DEFINE_string("data_dir", None, "The image folder the run trained on.")
_EXPORT = flags.DEFINE_string("export_holdout", None, "Also write symlinks to the held-out files here.")
_GRID = flags.DEFINE_string("grid", None, "Also write 8 originals over their reconstructions here.")
flags.mark_flags_as_required(["workdir", "data_dir"])


def main(_):
    import numpy as np
    from PIL import Image

    from vqgan_jax import cli
    from vqgan_jax.data.folders import scan_folder
    from vqgan_jax.eval import image_metrics, suite as evaluation
    from vqgan_jax.train import loading
    from vqgan_jax.viz import images
    cli.quiet_logs()
    vq = loading.load_vqgan(_WORKDIR.value)
    config, step = vq.config, vq.step
    files = [p for p, _ in scan_folder(_DATA.value, float(config.data.eval_fraction)).eval]
    orig = np.stack([np.asarray(Image.open(f).convert("RGB"), np.uint8) for f in files])
    size = int(config.data.image_size)
    if orig.shape[1:3] != (size, size):
        raise SystemExit(f"held-out images are {orig.shape[1:3]}, the run trained at {size}: use a folder at {size}")
    x = orig.astype(np.float32) / 127.5 - 1.0  # exact: 127.5 * (x + 1) gives the uint8 values back
    recon, codes = evaluation.reconstruct_all(vq, x, batch_size=64)  # clipped to [-1, 1]
    k = int(config.quantizer.num_codes)
    book = image_metrics.codebook_stats(np.bincount(codes.ravel(), minlength=k))
    out = {"workdir": _WORKDIR.value, "step": int(step), "n_images": len(files),
           "psnr_mean": float(image_metrics.psnr(x, recon).mean()),
           "l1_mean_255": float(127.5 * image_metrics.l1(x, recon).mean()), "codes_used": book["used"],
           "num_codes": k, "codebook_usage": book["usage"], "code_perplexity": book["perplexity"]}
    if _GRID.value:
        images.save_png(_GRID.value, images.originals_over_reconstructions(x[:8], recon[:8]))
    if _EXPORT.value:
        os.makedirs(_EXPORT.value, exist_ok=True)
        for f in files:
            link = os.path.join(_EXPORT.value, os.path.basename(f))
            if not os.path.exists(link):
                os.symlink(os.path.abspath(f), link)
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
