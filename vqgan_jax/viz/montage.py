"""The image grids a run wrote during training, stacked over time in one picture (the evolution montage).

    DIR/<stage>/images/step_NNNNNNN.png  ->  one row per chosen step (stage 1: the originals once, on top)

Everything is read from the run folder alone, so this works on a finished run, a running one, or a copy.
"""
from __future__ import annotations

import os
import re

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vqgan_jax.viz import images as images_lib

PAD = 2            # images.grid's default padding, which originals_over_reconstructions uses
LABEL_WIDTH = 56   # pixels of white margin at the left of a montage for the step numbers
MAX_WIDTH = 1024   # sample grids wider than this are scaled down in the montage
_STEP_PNG = re.compile(r"^step_(\d+)\.png$")


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
