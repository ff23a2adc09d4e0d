"""Loss curves from a part's `metrics.jsonl`: one panel per quantity, training and held-out together.

Matplotlib draws through its Agg canvas directly (no pyplot, so no global backend is switched).
"""
from __future__ import annotations

import math
import os

import numpy as np

from vqgan_jax.train.metrics import read_metrics

# Panels per run-folder part: (title, [(metrics key, legend label), ...]); a panel without data is left out.
PANELS = {
    "vqgan": (
        ("reconstruction loss", (("g/rec", "train g/rec"), ("eval/rec", "held-out eval/rec"))),
        ("adversarial losses", (("g/adv", "generator g/adv"), ("d/loss", "discriminator d/loss"))),
        ("adaptive weight", (("d_weight", "d_weight"),)),
        ("codebook usage (fraction of codes)", (("codebook/usage", "train"), ("eval/usage", "held-out"))),
        ("codebook perplexity", (("codebook/perplexity", "train"), ("eval/perplexity", "held-out"))),
        ("commitment loss", (("g/commit", "g/commit"),)),
        ("perceptual loss", (("g/perceptual", "g/perceptual"),)),
        ("held-out PSNR (dB)", (("eval/psnr", "eval/psnr"),)),
    ),
    "prior": (
        ("next-token loss", (("loss", "loss"),)),
        ("next-token accuracy", (("accuracy", "accuracy"),)),
    ),
    "dcgan": (
        ("generator and discriminator losses", (("g/loss", "generator g/loss"), ("d/loss", "discriminator d/loss"))),
        ("discriminator outputs", (("d/real", "D(x)"), ("d/fake", "D(G(z))"))),
    ),
    "diffusion": (
        ("denoising loss (weighted)", (("loss", "loss"),)),
        ("denoising mse by noise level", (("mse_high_noise", "t >= T/2"), ("mse_low_noise", "t < T/2"))),
        ("gradient norm", (("grad_norm", "grad_norm"),)),
    ),
    "vae": (
        ("reconstruction NLL (nats per image)", (("rec", "train"), ("eval/rec", "held-out"))),
        ("KL (nats per image)", (("kl", "train"), ("eval/kl", "held-out"))),
        ("beta (KL weight)", (("beta", "beta"),)),
        ("active latent units", (("active_units", "train batch"), ("eval/active_units", "held-out"))),
        ("negative ELBO (nats per dim)", (("neg_elbo_per_dim", "train"), ("eval/neg_elbo_per_dim", "held-out"))),
        ("adversarial losses", (("g/adv", "generator g/adv"), ("d/loss", "discriminator d/loss"))),
        ("perceptual loss", (("perceptual", "perceptual"),)),
        ("held-out PSNR (dB)", (("eval/psnr", "eval/psnr"),)),
    ),
}


def metric_series(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one key over metrics rows, sorted by step.

    Rows without the key are skipped (eval numbers come in their own rows at eval steps); a step
    logged twice (a run resumed from an earlier checkpoint) keeps its last value.
    """
    by_step = {int(r["step"]): float(r[key]) for r in rows if key in r and "step" in r}
    steps = np.array(sorted(by_step), np.int64)
    return steps, np.array([by_step[s] for s in steps], np.float64)


def plot_panels(rows: list[dict], stage: str) -> list[tuple[str, list]]:
    """[(title, [(label, steps, values), ...]), ...] of the stage's panels that have data.

    A panel whose values are all exactly 0 is left out too: a switched-off term (perceptual_weight 0,
    or no discriminator) is logged as 0 and would only add an empty flat line.
    """
    panels = []
    for title, keys in PANELS[stage]:
        lines = [(label, *metric_series(rows, key)) for key, label in keys]
        lines = [line for line in lines if len(line[1])]
        if any(np.any(values != 0) for _, _, values in lines):
            panels.append((title, lines))
    return panels


def loss_curves(metrics_jsonl: str, out_png: str, *, stage: str = "vqgan") -> str | None:
    """One figure of panels over training steps from a metrics.jsonl -> out_png.

    stage "vqgan": reconstruction (train g/rec and held-out eval/rec together), g/adv and d/loss,
    d_weight, codebook usage and perplexity (train and held-out), g/commit, g/perceptual and eval/psnr;
    stage "prior": loss and accuracy. Keys a run did not log (or logged as 0 throughout) are left out.
    Returns out_png, or None when the file has no rows or no panel has data.
    """
    if stage not in PANELS:
        raise ValueError(f"stage must be one of {sorted(PANELS)}, got {stage!r}")
    rows = read_metrics(metrics_jsonl)
    panels = plot_panels(rows, stage)
    if not panels:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.2 * nrows), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (title, lines) in zip(axes, panels):
        for label, steps, values in lines:
            sparse = len(steps) <= 40  # held-out numbers come every eval_every steps: show the points
            ax.plot(steps, values, label=label, marker="o" if sparse else None, markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(lines) > 1:
            ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    last = max(int(r["step"]) for r in rows if "step" in r)
    run = os.path.basename(os.path.dirname(os.path.dirname(os.path.abspath(metrics_jsonl))))  # DIR's name
    fig.suptitle(f"{run}/{stage}, last step {last}", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    tmp = out_png + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, out_png)  # atomic, like images.save_png
    return out_png
