"""The README's "Results" table and pictures, from one command: four generators trained on the same folder
of photos with fixed recipes, each scored by the same evaluation, written into README.md (between its
results markers, with --update_readme) and docs/images/.

    python bench/results.py --data_dir ../shared/data/flowers64 --workdir runs/results [--update_readme]

What it trains (the recipes are fixed below, so the table says exactly what produced it):
    WORK/f64     the VQGAN (720 steps), then two priors over it, each given the same training wall-clock
                 (PRIOR_MINUTES): the GPT-2 over its tokens (`--stage prior`) and the latent-diffusion U-Net
                 over its latents (`--stage diffusion`). A prior's step count is its budget divided by its own
                 seconds per step, measured on its first CALIBRATION_STEPS steps (which the run keeps: they
                 lie inside the warm-up, where the schedule does not depend on the total).
    WORK/vae     the flowers64 VAE (VAE_STEPS)
    WORK/dcgan   the flowers64 DCGAN (DCGAN_STEPS)
Each is evaluated with `python -m vqgan_jax.evaluate` on NUM_SAMPLES samples against the held-out photos;
sampling speed comes from bench/sample_speed.py (the diffusion prior's from bench/diffusion_steps.py, which
also gives its quality against the sampler's step count).

--side_by_side trains independent parts two at a time, each process pinned to its own core (taskset):
the VAE and the DCGAN beside each other, and the two priors beside each other. On the 2-core CPU this is
a poor trade for the priors: pinned to one core, XLA's thread pool (sized for two) made the GPT-2 step
6.7 s instead of 4.3 s alone on both cores (2026-12-02), so the priors train one after the other by default. The table says which way
it ran.

Every step is resumable: a finished part is not trained again (train.py continues to the same total,
which is nothing), an evaluation already written is kept (--reevaluate redoes them), so re-running after an
interruption picks up where it stopped.
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"

STAGE1_STEPS = 720
PRIOR_MINUTES = 30.0
CALIBRATION_STEPS = 30
VAE_STEPS = 600
DCGAN_STEPS = 700
NUM_SAMPLES = 256
DIFFUSION_SAMPLER, DIFFUSION_SAMPLE_STEPS = "dpmpp2m", 25
CAUGHT_TARGET = 0.80   # the latent-diffusion issue's target for the better prior's classifier accuracy
GENERATORS = ("prior", "diffusion", "vae", "dcgan")
TITLES = {"prior": "VQGAN + GPT-2", "diffusion": "VQGAN + diffusion", "vae": "VAE", "dcgan": "DCGAN"}


def folder_args(data_dir):
    return ["--config.data.source=folder", f"--config.data.dir={data_dir}"]


def stage1_args(data_dir):
    # flowers64 at batch 16, perceptual loss off (the PyTorch peer has no LPIPS weights offline, and the
    # bench/README.md quality check uses the same recipe), 720 steps; the discriminator starts at 1500, so it
    # never runs in this budget.
    return ["--config", "configs/flowers64.py", *folder_args(data_dir),
            "--config.loss.perceptual_weight=0", f"--config.train.num_steps={STAGE1_STEPS}",
            "--config.train.image_every=120", "--config.train.eval_every=120", "--config.train.ckpt_every=120",
            "--config.train.log_every=20"]


def prior_args(data_dir, steps):
    # The flowers64 GPT-2 (8 x 256) at batch 16, lr 6e-4, a 60-step warm-up, cosine decay to `steps`.
    return stage1_args(data_dir) + [
        "--stage", "prior", f"--config.prior.num_steps={steps}", "--config.prior.warmup_steps=60",
        "--config.prior.lr=6e-4", "--config.prior.image_every=200", "--config.prior.ckpt_every=100",
        "--config.prior.log_every=10"]


def diffusion_args(data_dir, steps):
    # The flowers64 U-Net (ch 128, (1, 2), attention at 8x8) over the VQGAN's continuous latents, batch 32,
    # v-prediction, cosine schedule, min-SNR 5, EMA 0.999, a 60-step warm-up.
    return stage1_args(data_dir) + [
        "--stage", "diffusion", f"--config.diffusion.num_steps={steps}", "--config.diffusion.warmup_steps=60",
        "--config.diffusion.image_every=200", "--config.diffusion.ckpt_every=100",
        "--config.diffusion.log_every=10"]


def vae_args(data_dir):
    # The reference VAE's loss at 64x64 (BCE + KL, 256-d latent, Adam 1e-4), sized for a 2-core CPU: width 32
    # and batch 16 (the VQGAN's batch; the config's width 64 at batch 64 runs at 4 images/s here), KL warm-up
    # over 300 steps.
    return ["--config", "configs/vae/flowers64.py", *folder_args(data_dir), f"--config.train.num_steps={VAE_STEPS}",
            "--config.model.ch=32", "--config.train.batch_size=16", "--config.loss.kl_warmup_steps=300", "--config.train.image_every=200", "--config.train.eval_every=200",
            "--config.train.ckpt_every=200", "--config.train.log_every=20"]


def dcgan_args(data_dir):
    # Radford et al.'s 64x64 DCGAN (z 100, Adam 2e-4 / 0.5, non-saturating loss) at half width (ngf = ndf = 32)
    # and batch 32, sized for a 2-core CPU (full width at batch 64 runs at about 8 images/s here).
    return ["--config", "configs/dcgan/flowers64.py", *folder_args(data_dir), f"--config.train.num_steps={DCGAN_STEPS}",
            "--config.model.ngf=32", "--config.model.ndf=32", "--config.train.batch_size=32",
            "--config.train.image_every=200", "--config.train.ckpt_every=200", "--config.train.log_every=20"]


def _log(msg):
    print(f"[results {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_all(cmds, pin: bool):
    """Runs (name, argv) commands, all at once (process i pinned to core i when pin) or one after the other;
    returns {name: wall seconds}; a failure stops everything."""
    seconds = {}
    if not pin:
        for name, cmd in cmds:
            _log(f"{name}: " + " ".join(cmd))
            t = time.time()
            subprocess.run(cmd, cwd=ROOT, check=True)
            seconds[name] = time.time() - t
        return seconds
    procs = []
    for core, (name, cmd) in enumerate(cmds):
        cmd = ["taskset", "-c", str(core % os.cpu_count()), *cmd]
        _log(f"{name} (core {core % os.cpu_count()}): " + " ".join(cmd))
        procs.append((name, subprocess.Popen(cmd, cwd=ROOT), time.time()))
    failed, running = [], list(procs)
    while running:                       # each one's own end time, whichever finishes first
        time.sleep(1)
        for name, p, t in list(running):
            if p.poll() is not None:
                running.remove((name, p, t))
                seconds[name] = time.time() - t
                if p.returncode != 0:
                    failed.append(f"{name} (exit {p.returncode})")
    if failed:
        raise SystemExit("failed: " + ", ".join(failed))
    return seconds


def _rows(workdir, part):
    from vqgan_jax.train import metrics as metrics_lib
    path = os.path.join(workdir, part, "metrics.jsonl")
    return metrics_lib.read_metrics(path) if os.path.isfile(path) else []


def seconds_per_step(workdir: str, part: str) -> float:
    """Median seconds per step over the metrics rows' throughput (which leaves out the compiling first step)."""
    import numpy as np
    if part == "prior":
        with open(os.path.join(workdir, "prior", "layout.json")) as f:
            layout = json.load(f)
        cfg = json.load(open(os.path.join(workdir, "prior", "config.json")))
        items, key = cfg["prior"]["batch_size"] * (layout["seq_len"] - 1), "tokens_per_sec"
    else:
        cfg = json.load(open(os.path.join(workdir, part, "config.json")))
        items, key = cfg[part]["batch_size"], "images_per_sec"
    rates = [r[key] for r in _rows(workdir, part) if r.get(key)]
    if not rates:
        raise SystemExit(f"no {key} rows in {workdir}/{part}/metrics.jsonl to calibrate from")
    return float(np.median([items / r for r in rates]))


def wall_minutes(workdir, part) -> float:
    """A part's training wall-clock from its run folder: config.json (written when training starts) to the
    newest checkpoint file; for a part trained in one go whose invocation did not record its time."""
    start = os.path.getmtime(os.path.join(workdir, part, "config.json"))
    end = max(os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(workdir, part, "checkpoints"))
              for f in fs)
    return (end - start) / 60


def trained_steps(workdir, part) -> int:
    rows = _rows(workdir, part)
    return int(rows[-1]["step"]) if rows else 0


def evaluate(py, workdir, name, out_dir, reevaluate: bool) -> dict:
    out = os.path.join(out_dir, "eval.json")
    if reevaluate or not os.path.isfile(out):
        run_all([(f"evaluate {name}", [py, "-m", "vqgan_jax.evaluate", "--workdir", workdir, "--prior", name,
                                       "--num_samples", str(NUM_SAMPLES), "--out", out])], pin=False)
    with open(out) as f:
        return json.load(f)


def sample_speed(py, workdir, name, steps=()) -> list[dict]:
    cmd = [py, "bench/sample_speed.py", "--workdir", workdir, "--prior", name, "--num", "64"]
    if steps:
        cmd += ["--steps", ",".join(str(s) for s in steps)]
    _log(" ".join(cmd))
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


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


def loss_summary(workdir: str) -> str:
    """What the two priors' training rows say at the start and at the end (mean of the last 3 logged rows)."""
    def ends(part, keys):
        rows = [r for r in _rows(workdir, part) if all(k in r for k in keys)]
        if not rows:
            return None
        tail = rows[-3:]
        return rows[0], {k: sum(r[k] for r in tail) / len(tail) for k in keys}, rows[-1]["step"]
    out = []
    gpt = ends("prior", ("loss", "accuracy"))
    if gpt:
        first, last, step = gpt
        out.append(f"GPT-2 cross-entropy {first['loss']:.2f} at step {first['step']} -> {last['loss']:.2f} nats/token "
                   f"(token accuracy {100 * last['accuracy']:.1f}%) over the last 3 logged rows to step {step}")
    dif = ends("diffusion", ("loss", "mse"))
    if dif:
        first, last, step = dif
        out.append(f"diffusion loss {first['loss']:.3f} at step {first['step']} -> {last['loss']:.3f}, mse "
                   f"{first['mse']:.3f} -> {last['mse']:.3f} over the last 3 logged rows to step {step}")
    return "Training curves (metrics.jsonl): " + "; ".join(out) + "." if out else ""


def _f(x, fmt):
    return "n/a" if x is None else format(x, fmt)


def table(facts: dict) -> str:
    ev, speed, train = facts["eval"], facts["speed"], facts["train"]
    head = "| | " + " | ".join(TITLES[g] for g in GENERATORS) + " |"
    lines = [head, "|" + " --- |" * (len(GENERATORS) + 1)]

    def row(label, cell):
        lines.append(f"| {label} | " + " | ".join(cell(g) for g in GENERATORS) + " |")

    budget = facts["budget"]

    def training(g):
        if g in budget:   # a prior: its step count is its budget over its own measured step time
            return (f"{budget[g]['steps']} steps ({facts['prior_minutes']:g}-min budget at "
                    f"{budget[g]['seconds_per_step']:.2f} s/step; {train[g]['minutes']:.0f} min wall-clock)")
        return f"{train[g]['steps']} steps, {train[g]['minutes']:.0f} min wall-clock"

    row("training (this CPU)", training)
    row("training of its stage 1", lambda g: f"the VQGAN: {train['vqgan']['steps']} steps, "
                                            f"{train['vqgan']['minutes']:.0f} min" if g in budget else "-")
    row("real-vs-fake classifier accuracy (0.5 = cannot tell)",
        lambda g: f"**{ev[g]['classifier']['accuracy']:.3f}**")
    row("fd_vgg16 (lower is better)", lambda g: _f(ev[g]["generation"]["fd_vgg16"], ".1f"))
    row("kd_vgg16 x 1000", lambda g: _f(1000 * ev[g]["generation"]["kd_vgg16_mean"], ".2f"))
    row("precision / recall", lambda g: f"{ev[g]['generation']['precision']:.3f} / {ev[g]['generation']['recall']:.3f}")
    row("seconds per 64 images", lambda g: speed.get(g, "not measured"))
    lines.append("")
    n = ev["prior"]["generation"]["num_samples"]
    clf = ev["prior"]["classifier"]
    lines.append(f"{n} samples per generator against the held-out photos ({clf['num_test']} images in the classifier's "
                 f"test split); the priors' samples are decoded by the same VQGAN. {facts['prior_note']}")
    best = min(("prior", "diffusion"), key=lambda g: ev[g]["classifier"]["accuracy"])
    acc = ev[best]["classifier"]["accuracy"]
    verdict = ("met" if acc <= CAUGHT_TARGET else f"missed by {100 * (acc - CAUGHT_TARGET):.1f} points")
    lines.append(f"Target for the better prior ({TITLES[best]}): caught at most {100 * CAUGHT_TARGET:.0f}% of the "
                 f"time: {verdict} ({100 * acc:.1f}%). {facts.get('loss_note', '')}".rstrip())
    lines.append("")
    rec_v, rec_a = ev["prior"]["reconstruction"], ev["vae"]["reconstruction"]
    lines += ["| held-out reconstruction | VQGAN (f = 4, 512 codes) | VAE (256-d latent) |", "| --- | --- | --- |",
              f"| PSNR | {rec_v['psnr']:.2f} dB | {rec_a['psnr']:.2f} dB |",
              f"| SSIM | {rec_v['ssim']:.4f} | {rec_a['ssim']:.4f} |",
              f"| LPIPS (VGG16) | {rec_v['lpips']:.4f} | {rec_a['lpips']:.4f} |",
              f"| latent use | {rec_v['codes_used']}/{rec_v['num_codes']} codes, perplexity {rec_v['perplexity']:.0f} | "
              f"{_f(rec_a.get('active_units'), 'd')}/{_f(rec_a.get('latent_dims'), 'd')} active units, KL {_f(rec_a.get('kl'), '.1f')} nats |",
              f"| negative ELBO | | {_f(rec_a.get('bits_per_dim'), '.3f')} bits/dim |", ""]
    lines.append(f"Machine: {facts['machine']}. Recipes: `bench/results.py`; fd_vgg16 is a Frechet distance on "
                 "VGG16 features, not FID, and not comparable with published FIDs.")
    return "\n".join(lines)


def _tiles(path, grid_rows, take_rows, cols, pad=2):
    """The first take_rows x cols tiles of a picture made by viz.images.grid (grid_rows rows, pad pixels)."""
    import numpy as np
    from PIL import Image
    pic = np.asarray(Image.open(path).convert("RGB"))
    tile = (pic.shape[0] - (grid_rows + 1) * pad) // grid_rows
    return [pic[pad + r * (tile + pad): pad + r * (tile + pad) + tile,
                pad + c * (tile + pad): pad + c * (tile + pad) + tile] for r in range(take_rows) for c in range(cols)]


def readme_picture(eval_dirs: dict, out: str) -> str:
    """Rows of 8: held-out photos, their VQGAN reconstructions, then samples of each generator in GENERATORS
    order, cut from the pictures the evaluations wrote (reconstructions.png: 16 originals over their
    reconstructions; samples.png: 64 samples, 8 x 8)."""
    import numpy as np
    from vqgan_jax.viz import images as images_lib
    rec = _tiles(os.path.join(eval_dirs["prior"], "reconstructions.png"), 2, 2, 16)
    rows = rec[:8] + rec[16:24]
    for g in GENERATORS:
        rows += _tiles(os.path.join(eval_dirs[g], "samples.png"), 8, 1, 8)
    images_lib.save_png(out, images_lib.grid(np.stack(rows), ncols=8, pad=2))
    return out


def held_out_pair(data_dir: str) -> list[str]:
    from vqgan_jax.data import folders
    names = sorted(n for n in os.listdir(data_dir) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    held = [n for n in names if folders.is_eval_file(n, 0.05)]
    return [os.path.join(data_dir, n) for n in held[:2]]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data_dir", required=True, help="folder of photos, e.g. ../shared/data/flowers64")
    ap.add_argument("--workdir", default="runs/results")
    ap.add_argument("--side_by_side", action="store_true", help="independent parts two at a time, one core each")
    ap.add_argument("--prior_minutes", type=float, default=PRIOR_MINUTES)
    ap.add_argument("--update_readme", action="store_true", help="replace the table in README.md, write docs/images/")
    ap.add_argument("--reevaluate", action="store_true", help="evaluate again even where eval.json exists")
    ap.add_argument("--no_speed", action="store_true", help="skip the sampling-speed and diffusion-steps "
                    "measurements and the VAE interpolation strip (the table then says 'not measured')")
    args = ap.parse_args()
    py, work = sys.executable, os.path.abspath(args.workdir)
    f64, vae, dcgan = (os.path.join(work, n) for n in ("f64", "vae", "dcgan"))
    facts_path = os.path.join(work, "facts.json")
    facts = json.load(open(facts_path)) if os.path.isfile(facts_path) else {"train": {}}

    def save():
        os.makedirs(work, exist_ok=True)
        with open(facts_path, "w") as f:
            json.dump(facts, f, indent=2)

    def train(name, steps, seconds):
        t = facts["train"].setdefault(name, {"steps": steps, "minutes": 0.0})
        t["steps"] = steps
        t["minutes"] += seconds / 60
        save()

    # 1. stage 1, the VAE and the DCGAN (independent of each other)
    first = [("vqgan", [py, "train.py", "--workdir", f64, *stage1_args(args.data_dir)])]
    others = [("vae", [py, "train.py", "--workdir", vae, *vae_args(args.data_dir)]),
              ("dcgan", [py, "train.py", "--workdir", dcgan, *dcgan_args(args.data_dir)])]
    todo = [(n, c) for n, c in first + others
            if trained_steps({"vqgan": f64, "vae": vae, "dcgan": dcgan}[n], n) < {"vqgan": STAGE1_STEPS, "vae": VAE_STEPS,
                                                                                "dcgan": DCGAN_STEPS}[n]]
    if args.side_by_side:
        for n, s in run_all([c for c in todo if c[0] != "vqgan"], pin=True).items():
            train(n, {"vae": VAE_STEPS, "dcgan": DCGAN_STEPS}[n], s)
        for n, s in run_all([c for c in todo if c[0] == "vqgan"], pin=False).items():
            train(n, STAGE1_STEPS, s)
    else:
        for n, s in run_all(todo, pin=False).items():
            train(n, {"vqgan": STAGE1_STEPS, "vae": VAE_STEPS, "dcgan": DCGAN_STEPS}[n], s)

    for n, w, steps in (("vqgan", f64, STAGE1_STEPS), ("vae", vae, VAE_STEPS), ("dcgan", dcgan, DCGAN_STEPS)):
        if n not in facts["train"]:
            facts["train"][n] = {"steps": steps, "minutes": wall_minutes(w, n)}

    # 2. the two priors: calibrate (their first steps), then train to the budget
    builders = {"prior": prior_args, "diffusion": diffusion_args}
    budget = facts.setdefault("budget", {})
    cal = [(g, [py, "train.py", "--workdir", f64, *builders[g](args.data_dir, CALIBRATION_STEPS)])
           for g in builders if g not in budget and trained_steps(f64, g) < CALIBRATION_STEPS]
    for n, s in run_all(cal, pin=args.side_by_side).items():
        train(n, CALIBRATION_STEPS, s)
    for g in builders:
        if g not in budget:
            sps = seconds_per_step(f64, g)
            budget[g] = {"seconds_per_step": sps, "steps": max(CALIBRATION_STEPS, int(args.prior_minutes * 60 / sps))}
            _log(f"{g}: {sps:.3f} s/step -> {budget[g]['steps']} steps in {args.prior_minutes:g} min")
    save()
    full = [(g, [py, "train.py", "--workdir", f64, *builders[g](args.data_dir, budget[g]["steps"])])
            for g in builders if trained_steps(f64, g) < budget[g]["steps"]]
    for n, s in run_all(full, pin=args.side_by_side).items():
        train(n, budget[n]["steps"], s)
    facts["prior_minutes"] = args.prior_minutes
    facts["prior_note"] = (
        f"Each prior's step count is {args.prior_minutes:g} minutes over its own step time measured on its first "
        f"{CALIBRATION_STEPS} steps (GPT-2 {budget['prior']['seconds_per_step']:.2f} s/step, diffusion "
        f"{budget['diffusion']['seconds_per_step']:.2f} s/step" +
        (", the two side by side on one core each" if args.side_by_side else ", one after the other on both cores") +
        (f", {os.environ['GLIBC_TUNABLES']})." if os.environ.get("GLIBC_TUNABLES") else ")."))

    # 3. evaluation and speed
    workdirs = {"prior": f64, "diffusion": f64, "vae": vae, "dcgan": dcgan}
    eval_dirs = {g: os.path.join(workdirs[g], "eval", g) for g in GENERATORS}
    facts["eval"] = {g: evaluate(py, workdirs[g], g, eval_dirs[g], args.reevaluate) for g in GENERATORS}
    save()
    steps_plot = os.path.join(f64, "eval", "diffusion_steps.png")
    if not args.no_speed and (not os.path.isfile(steps_plot) or args.reevaluate):
        run_all([("diffusion steps", [py, "bench/diffusion_steps.py", "--workdir", f64, "--steps",
                                      f"10,{DIFFUSION_SAMPLE_STEPS},50", "--num", "128"])], pin=False)
    speed = facts.setdefault("speed", {})
    if not args.no_speed and ("prior" not in speed or args.reevaluate):
        with open(os.path.join(f64, "eval", "diffusion_steps.json")) as f:   # timed by diffusion_steps.py
            speed["diffusion"] = ", ".join(f"{r['seconds_per_64']:.1f} ({r['steps']} steps)" for r in json.load(f))
        for g in ("prior", "vae", "dcgan"):
            r = sample_speed(py, workdirs[g], g)[0]
            speed[g] = f"{r['seconds_per_64']:.1f}" + (" (KV cache)" if g == "prior" else "")
        save()
    strip = os.path.join(vae, "eval", "interpolation.png")
    if not args.no_speed and (not os.path.isfile(strip) or args.reevaluate):
        a, b = held_out_pair(args.data_dir)
        run_all([("vae interpolation", [py, "sample.py", "--workdir", vae, "--interpolate", a, b, "--steps", "8",
                                        "--slerp", "--out", strip])], pin=False)
    facts["machine"] = machine()
    facts["loss_note"] = loss_summary(f64)
    save()

    text = table(facts)
    print(text)
    if args.update_readme:
        images = os.path.join(ROOT, "docs", "images")
        os.makedirs(images, exist_ok=True)
        print("README picture:", readme_picture(eval_dirs, os.path.join(images, "flowers64.png")))
        for src, name in ((steps_plot, "diffusion_steps.png"), (strip, "vae_interpolation.png")):
            if os.path.isfile(src):
                shutil.copy(src, os.path.join(images, name))
        path = os.path.join(ROOT, "README.md")
        readme = open(path).read()
        if BEGIN not in readme or END not in readme:
            raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
        env = f"GLIBC_TUNABLES={os.environ['GLIBC_TUNABLES']} " if os.environ.get("GLIBC_TUNABLES") else ""
        cmd = env + "python bench/results.py --data_dir {} --workdir {}{}{}{} --update_readme".format(
            args.data_dir, args.workdir, " --side_by_side" if args.side_by_side else "",
            f" --prior_minutes {args.prior_minutes:g}" if args.prior_minutes != PRIOR_MINUTES else "",
            " --no_speed" if args.no_speed else "")
        block = f"{BEGIN}\n<!-- written by `{cmd}`; do not edit by hand -->\n{text}\n{END}"
        readme = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, readme, flags=re.S)
        with open(path, "w") as f:
            f.write(readme)
        print("README.md updated")


if __name__ == "__main__":
    main()
