"""Pictures of how a run trained: the image grids stacked over time (seed 000's epoch-by-epoch picture)
and the loss curves from `metrics.jsonl`, for stage 1 (DIR/vqgan) and the prior (DIR/prior).

    DIR/pictures/<stage>/evolution.png     one row per chosen step (stage 1: originals once, on top)
    DIR/pictures/<stage>/loss_curves.png   one panel per quantity, training and held-out together

Everything is read from the run folder alone, so this works on a finished run, a running one, or a copy.
Matplotlib draws through its Agg canvas directly (no pyplot, so no global backend is switched).
"""
from __future__ import annotations

import math
import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vqgan_jax import images as images_lib, runs
from vqgan_jax.errors import UserError
from vqgan_jax.metrics import MetricWriter, read_metrics

PAD = 2            # images.grid's default padding, which originals_over_reconstructions uses
LABEL_WIDTH = 56   # pixels of white margin at the left of a montage for the step numbers
MAX_WIDTH = 1024   # sample grids wider than this are scaled down in the montage
_STEP_PNG = re.compile(r"^step_(\d+)\.png$")

# Stage-1 panels: (title, [(metrics key, legend label), ...]); a panel without any data is left out.
VQGAN_PANELS = (
    ("reconstruction loss", (("g/rec", "train g/rec"), ("eval/rec", "held-out eval/rec"))),
    ("adversarial losses", (("g/adv", "generator g/adv"), ("d/loss", "discriminator d/loss"))),
    ("adaptive weight", (("d_weight", "d_weight"),)),
    ("codebook usage (fraction of codes)", (("codebook/usage", "train"), ("eval/usage", "held-out"))),
    ("codebook perplexity", (("codebook/perplexity", "train"), ("eval/perplexity", "held-out"))),
    ("commitment loss", (("g/commit", "g/commit"),)),
    ("perceptual loss", (("g/perceptual", "g/perceptual"),)),
    ("held-out PSNR (dB)", (("eval/psnr", "eval/psnr"),)),
)
PRIOR_PANELS = (
    ("next-token loss", (("loss", "loss"),)),
    ("next-token accuracy", (("accuracy", "accuracy"),)),
)


def list_step_images(image_dir: str) -> list[tuple[int, str]]:
    """(step, path) of every DIR/<stage>/images/step_NNNNNNN.png, by step; [] for a missing folder."""
    if not os.path.isdir(image_dir):
        return []
    found = [(int(m.group(1)), os.path.join(image_dir, name))
             for name in os.listdir(image_dir) if (m := _STEP_PNG.match(name))]
    return sorted(found)


def choose_frames(steps: list[int], max_frames: int) -> list[int]:
    """Indices into the sorted `steps` of up to max_frames pictures spread evenly over the steps.

    The first and last are always chosen (only the last when max_frames is 1); each target step of an
    even spacing takes the nearest picture, so an irregular cadence (a resume that changed
    image_every) still spreads over time rather than over files.
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    n = len(steps)
    if n <= max_frames:
        return list(range(n))
    if max_frames == 1:
        return [n - 1]
    s = np.asarray(steps, np.float64)
    chosen = {int(np.argmin(np.abs(s - t))) for t in np.linspace(s[0], s[-1], max_frames)}
    return sorted(chosen | {0, n - 1})


def _load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _tile_height(picture: np.ndarray) -> int | None:
    """Tile size of an originals_over_reconstructions picture (2 rows of square tiles), or None.

    Layout (PAD pixels of white everywhere between and around tiles):
        height = PAD + h + PAD + h + PAD,   width = n * (h + PAD) + PAD.
    """
    height, width = picture.shape[:2]
    h2 = height - 3 * PAD
    if h2 <= 0 or h2 % 2:
        return None
    h = h2 // 2
    return h if (width - PAD) % (h + PAD) == 0 else None


def _pad_width(band: np.ndarray, width: int) -> np.ndarray:
    """White columns on the right up to `width` (frames of a run resumed with other grid sizes)."""
    if band.shape[1] == width:
        return band
    out = np.full((band.shape[0], width, 3), 255, np.uint8)
    out[:, : band.shape[1]] = band
    return out


def _label_column(height: int, text: str, text_rows: tuple[int, int]) -> np.ndarray:
    """uint8 (height, LABEL_WIDTH, 3): white with `text` centred vertically on rows text_rows=(top, bottom)."""
    im = Image.new("RGB", (LABEL_WIDTH, height), (255, 255, 255))
    if text:
        draw = ImageDraw.Draw(im)
        font = ImageFont.load_default()
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        y = (text_rows[0] + text_rows[1] - (bottom - top)) // 2 - top
        draw.text((max(2, LABEL_WIDTH - 4 - (right - left)) - left, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(im)


def evolution_montage(image_dir: str, out_png: str, *, max_frames: int = 12, label: bool = True,
                      kind: str = "auto") -> str | None:
    """Stacks up to max_frames step_*.png pictures of image_dir (first and last always) into out_png.

    kind "reconstructions" (stage 1's originals over reconstructions): the originals row once on top,
    then each chosen step's reconstruction row (the bottom half of its picture, copied pixel for pixel),
    so the montage is (1 + frames) * (h + PAD) + PAD pixels high and the grid's width wide.
    kind "samples" (the prior's sample grids): whole grids one below the other, scaled down to
    MAX_WIDTH pixels wide when wider. "auto" picks samples for DIR/prior/images and for pictures that
    are not two rows of square tiles, reconstructions otherwise.
    label: write each row's step number (and "input" by the originals) in a LABEL_WIDTH-pixel margin
    at the left. Returns out_png, or None when image_dir holds no step_*.png.
    """
    if kind not in ("auto", "reconstructions", "samples"):
        raise ValueError(f"kind must be 'auto', 'reconstructions' or 'samples', got {kind!r}")
    found = list_step_images(image_dir)
    if not found:
        return None
    chosen = [found[i] for i in choose_frames([s for s, _ in found], max_frames)]
    pictures = [(step, _load_rgb(path)) for step, path in chosen]
    if kind == "auto":
        is_prior = os.path.basename(os.path.dirname(os.path.abspath(image_dir))) == "prior"
        kind = "samples" if is_prior else "reconstructions"
    if kind == "reconstructions" and any(_tile_height(p) is None for _, p in pictures):
        kind = "samples"  # not the two-row layout: stack whole pictures instead

    # bands: (uint8 (rows, W, 3), label text, (first, last) rows of its tiles for the label)
    bands = []
    if kind == "reconstructions":
        h = _tile_height(pictures[0][1])
        first = pictures[0][1]
        bands.append((first[: PAD + h], "input", (PAD, PAD + h)))  # top padding + originals
        for step, p in pictures:
            hs = _tile_height(p)
            bands.append((p[PAD + hs: 2 * (PAD + hs)], str(step), (PAD, PAD + hs)))  # gap + reconstructions
        bands.append((first[2 * (PAD + h):], "", (0, 0)))  # the bottom padding
    else:
        for step, p in pictures:
            if p.shape[1] > MAX_WIDTH:
                size = (MAX_WIDTH, max(1, round(p.shape[0] * MAX_WIDTH / p.shape[1])))
                p = np.asarray(Image.fromarray(p).resize(size, Image.LANCZOS))
            bands.append((p, str(step), (0, p.shape[0])))
    width = max(b.shape[1] for b, _, _ in bands)
    rows = []
    for band, text, text_rows in bands:
        band = _pad_width(band, width)
        if label:
            band = np.concatenate([_label_column(band.shape[0], text, text_rows), band], axis=1)
        rows.append(band)
    images_lib.save_png(out_png, np.concatenate(rows, axis=0))
    return out_png


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
    for title, keys in VQGAN_PANELS if stage == "vqgan" else PRIOR_PANELS:
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
    if stage not in runs.STAGES:
        raise ValueError(f"stage must be one of {runs.STAGES}, got {stage!r}")
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


def _last_step(rows: list[dict], image_steps: list[int]) -> int:
    steps = [int(r["step"]) for r in rows if "step" in r] + image_steps
    return max(steps, default=0)


def write_training_pictures(workdir: str, out_dir: str | None = None, *, max_frames: int = 12,
                            tensorboard: bool = True) -> dict[str, str]:
    """Writes out_dir/<stage>/evolution.png and loss_curves.png for each stage DIR/vqgan, DIR/prior present.

    out_dir defaults to DIR/pictures. Returns {"<stage>/evolution": path, "<stage>/loss_curves": path}
    for the pictures written (a stage without images or metrics rows has none). tensorboard: also add
    them as images "pictures/evolution" and "pictures/loss_curves" to DIR/<stage>/tb at the last logged
    step. Raises UserError when workdir holds neither stage.
    """
    stages = [s for s in runs.STAGES if os.path.isdir(runs.stage_dir(workdir, s))]
    if not stages:
        raise UserError(f"{workdir} is not a run folder (no {' or '.join(runs.STAGES)} subfolder)")
    out_dir = os.path.join(workdir, "pictures") if out_dir is None else out_dir
    written: dict[str, str] = {}
    for stage in stages:
        src = runs.stage_dir(workdir, stage)
        metrics = os.path.join(src, "metrics.jsonl")
        image_dir = os.path.join(src, "images")
        dst = os.path.join(out_dir, stage)
        paths = {
            "evolution": evolution_montage(image_dir, os.path.join(dst, "evolution.png"), max_frames=max_frames,
                                           kind="reconstructions" if stage == "vqgan" else "samples"),
            "loss_curves": (loss_curves(metrics, os.path.join(dst, "loss_curves.png"), stage=stage)
                            if os.path.isfile(metrics) else None),
        }
        paths = {name: p for name, p in paths.items() if p is not None}
        written.update({f"{stage}/{name}": p for name, p in paths.items()})
        if tensorboard and paths:
            rows = read_metrics(metrics) if os.path.isfile(metrics) else []
            step = _last_step(rows, [s for s, _ in list_step_images(image_dir)])
            writer = MetricWriter(src, tensorboard=True)  # appends a new events file to DIR/<stage>/tb
            for name, p in paths.items():
                writer.write_image(step, f"pictures/{name}", _load_rgb(p))
            writer.close()
    return written
