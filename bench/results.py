"""The README's "Results" table and picture, from one command: train stage 1 and the prior on a folder of
photos, evaluate the run, and write the table (into README.md between its results markers with
--update_readme) and the picture (docs/images/flowers64.png: held-out photos over their reconstructions,
then samples of the prior).

    python bench/results.py --data_dir ../shared/data/flowers64 --workdir runs/results [--update_readme]

Every step is resumable: a finished stage is not trained again (train.py continues to the same total,
which is nothing), so re-running after an interruption picks up where it stopped. The recipe (steps,
overrides) is fixed below so that the table says exactly what produced it; change it here, not by hand.
"""
import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

STAGE1_STEPS = 720
PRIOR_STEPS = 300
NUM_SAMPLES = 512


def stage1_args(data_dir):
    # The issue-2 quality recipe: flowers64 at batch 16, perceptual loss off (the peer has no LPIPS
    # weights offline), 720 steps; the discriminator starts at 1500, so it never runs in this budget.
    return ["--config", "configs/flowers64.py", "--config.data.source=folder", f"--config.data.dir={data_dir}",
            "--config.loss.perceptual_weight=0", f"--config.train.num_steps={STAGE1_STEPS}",
            "--config.train.image_every=120", "--config.train.eval_every=120", "--config.train.ckpt_every=120",
            "--config.train.log_every=20"]


def prior_args(data_dir):
    # A short prior: 300 steps of the flowers64 GPT-2 (8 x 256) at batch 16 with a 30-step warm-up.
    return stage1_args(data_dir) + [
        "--stage", "prior", f"--config.prior.num_steps={PRIOR_STEPS}", "--config.prior.warmup_steps=30",
        "--config.prior.lr=6e-4", "--config.prior.image_every=100", "--config.prior.ckpt_every=100",
        "--config.prior.log_every=20"]


def run(cmd):
    print("+ " + " ".join(cmd), flush=True)
    t = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return time.time() - t


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{len(names)} x {names[0]}" if names else cpu
    except OSError:
        pass
    import jax
    dev = jax.devices()[0]
    return f"{cpu}; jax {jax.__version__} on {dev.platform} ({dev.device_kind})"


def table(ev: dict, data_dir: str, workdir: str) -> str:
    rec, clf, gen = ev["reconstruction"], ev["classifier"], ev["generation"]
    sys.path.insert(0, ROOT)
    from vqgan_jax.train import runs
    ema = float(runs.read_config_dict(workdir, "vqgan")["optim"]["ema_decay"]) > 0
    fid = "not computed (no Inception weights on this machine)" if gen.get("fid") is None else f"{gen['fid']:.2f}"
    rows = [
        ("held-out images", f"{rec['num_images']} (file-name-hash hold-out of `{data_dir}`, never trained on)"),
        ("stage-1 steps", f"{ev['vqgan_step']} (batch 16, perceptual loss off" +
                          (", EMA weights)" if ema else ", no weight EMA)")),
        ("PSNR", f"{rec['psnr']:.2f} dB"),
        ("SSIM", f"{rec['ssim']:.4f}"),
        ("LPIPS (VGG16)", f"{rec['lpips']:.4f}"),
        ("L1", f"{rec['l1']:.4f}"),
        ("codebook usage", f"{rec['codes_used']}/{rec['num_codes']} ({100 * rec['codebook_usage']:.1f}%), "
                           f"perplexity {rec['perplexity']:.1f}, {rec['dead_codes']} dead"),
        ("prior steps", f"{PRIOR_STEPS} (GPT-2 8 x 256, batch 16)"),
        ("real-vs-fake classifier accuracy", f"{clf['accuracy']:.3f} on {clf['num_test']} test images "
                                              f"({gen['num_samples']} samples; 0.5 = cannot tell apart)"),
        ("FID", fid),
    ]
    lines = ["| what | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    lines.append("")
    lines.append(f"Machine: {machine()}.")
    return "\n".join(lines)


def readme_picture(workdir: str, out: str) -> str:
    """8 held-out photos over their reconstructions, then 16 samples of the prior in two rows, from the
    pictures the evaluation wrote (DIR/eval/reconstructions.png, DIR/eval/samples.png)."""
    import numpy as np
    from PIL import Image
    sys.path.insert(0, ROOT)
    from vqgan_jax.viz import images as images_lib
    pad = 2
    rec = np.asarray(Image.open(os.path.join(workdir, "eval", "reconstructions.png")).convert("RGB"))
    smp = np.asarray(Image.open(os.path.join(workdir, "eval", "samples.png")).convert("RGB"))
    tile = (rec.shape[0] - 3 * pad) // 2                       # originals_over_reconstructions: 2 rows
    def tiles(picture, rows, cols):
        return [picture[pad + r * (tile + pad): pad + r * (tile + pad) + tile,
                        pad + c * (tile + pad): pad + c * (tile + pad) + tile] for r in range(rows) for c in range(cols)]
    originals, recons = tiles(rec, 1, 8), tiles(rec[tile + pad:], 1, 8)
    samples = tiles(smp, 2, 8)
    grid = images_lib.grid(np.stack(originals + recons + samples), ncols=8, pad=pad)
    images_lib.save_png(out, grid)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="folder of photos, e.g. ../shared/data/flowers64")
    ap.add_argument("--workdir", default="runs/results")
    ap.add_argument("--update_readme", action="store_true", help="replace the table in README.md")
    ap.add_argument("--table_only", action="store_true",
                    help="only re-render the table from the DIR/eval/eval.json an earlier full run wrote")
    args = ap.parse_args()
    py = sys.executable
    out = os.path.join(args.workdir, "eval", "eval.json")
    minutes = {}
    if not args.table_only:
        minutes["vqgan"] = run([py, "train.py", "--workdir", args.workdir, *stage1_args(args.data_dir)]) / 60
        minutes["prior"] = run([py, "train.py", "--workdir", args.workdir, *prior_args(args.data_dir)]) / 60
        minutes["eval"] = run([py, "-m", "vqgan_jax.evaluate", "--workdir", args.workdir,
                               "--num_samples", str(NUM_SAMPLES), "--out", out]) / 60
    with open(os.path.join(ROOT, out) if not os.path.isabs(out) else out) as f:
        ev = json.load(f)
    text = table(ev, args.data_dir, os.path.join(ROOT, args.workdir) if not os.path.isabs(args.workdir)
                 else args.workdir)
    print(text)
    print("wall minutes of this invocation (a finished stage is skipped): " +
          ", ".join(f"{k} {v:.1f}" for k, v in minutes.items()))
    if args.update_readme:
        work = os.path.join(ROOT, args.workdir) if not os.path.isabs(args.workdir) else args.workdir
        print("README picture:", readme_picture(work, os.path.join(ROOT, "docs", "images", "flowers64.png")))
        path = os.path.join(ROOT, "README.md")
        readme = open(path).read()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
        cmd = (f"python bench/results.py --data_dir {args.data_dir} --workdir {args.workdir} --update_readme")
        block = f"{BEGIN}\n<!-- written by `{cmd}`; do not edit by hand -->\n{text}\n{END}"
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
        with open(path, "w") as f:
            f.write(readme)
        print("README.md updated")


if __name__ == "__main__":
    main()
