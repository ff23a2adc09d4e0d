"""Procedural flower images: a data set that needs no files, for tests, smoke runs and demos.

Each image is one flower drawn from its own seed `(split seed, index)` with vectorised numpy polar
coordinates: k petals on a rose curve r(theta) = R (a + (1 - a) |cos(k (theta - phi) / 2)|^p) shaded from
a pale inside to a saturated tip, a textured centre disc, sometimes a stem, over a soft two-colour
background with a blurred light spot. The class fixes both the petal count (3..8) and the colour family,
so a class-conditional prior has something it can visibly get right or wrong.

Images are drawn at the requested size directly (no resampling) and cached per (size, n, seed).
"""
import functools

import numpy as np

PETAL_COUNTS = (3, 4, 5, 6, 7, 8)
NUM_CLASSES = len(PETAL_COUNTS)
CLASS_NAMES = tuple(f"{k} petals" for k in PETAL_COUNTS)
# Content seeds per split: fixed, independent of the training seed, so "the synthetic data set" is the
# same data set in every run, and train and eval never share an image.
SPLIT_SEEDS = {"train": 20240, "eval": 20241}
_PIXELS_PER_CHUNK = 1 << 21  # bounds the float32 temporaries to a few tens of MB per chunk


def split_size(split: str, synthetic_size: int) -> int:
    """Number of images in a split: `synthetic_size` for train, max(64, synthetic_size // 8) for eval."""
    return synthetic_size if split == "train" else max(64, synthetic_size // 8)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """h, s, v: float (n,) in [0, 1] -> float32 (n, 3) RGB in [0, 1] (the standard hexcone formula)."""
    k = (np.array([5.0, 3.0, 1.0]) + h[:, None] * 6.0) % 6.0          # (n, 3)
    rgb = v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return rgb.astype(np.float32)


def _draw_params(n: int, seed: int) -> dict[str, np.ndarray]:
    """Per-image drawing parameters, each image from its own generator so image i does not depend on n."""
    names = ("label", "petal_h", "petal_s", "petal_v", "tip_dark", "centre_h", "centre_v", "bg_top_h",
             "bg_top_s", "bg_bot_h", "bg_bot_v", "spot_x", "spot_y", "cx", "cy", "radius", "inner",
             "power", "phase", "centre_frac", "stem", "stem_slope", "stem_width")
    rows = []
    for i in range(n):
        r = np.random.default_rng([seed, i])
        label = r.integers(NUM_CLASSES)
        rows.append((
            label,
            (label / NUM_CLASSES + r.uniform(-0.04, 0.04)) % 1.0,   # hue family of the class
            r.uniform(0.55, 0.95), r.uniform(0.8, 1.0), r.uniform(0.55, 0.85),
            r.uniform(0.07, 0.15), r.uniform(0.35, 0.9),
            r.uniform(0.25, 0.6), r.uniform(0.1, 0.35), r.uniform(0.2, 0.4), r.uniform(0.2, 0.5),
            r.uniform(0.1, 0.9), r.uniform(0.05, 0.4),
            0.5 + r.uniform(-0.1, 0.1), 0.47 + r.uniform(-0.08, 0.08),
            r.uniform(0.28, 0.42), r.uniform(0.15, 0.4), r.uniform(0.6, 2.0), r.uniform(0, 2 * np.pi),
            r.uniform(0.16, 0.28), r.uniform() < 0.6, r.uniform(-0.25, 0.25), r.uniform(0.015, 0.035),
        ))
    cols = list(zip(*rows)) if rows else [[] for _ in names]
    return {name: np.asarray(col, dtype=np.float64) for name, col in zip(names, cols)}


def _soft(d: np.ndarray, size: int) -> np.ndarray:
    """Antialiased inside-mask from a signed distance d (unit image coords, > 0 inside): ~1.5 px ramp."""
    return np.clip(d * (size / 1.5) + 0.5, 0.0, 1.0)


def _render(p: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Draw m images. p: per-image parameters, each (m,). Returns float32 (m, size, size, 3) in [0, 1]."""
    col = lambda name: p[name].astype(np.float32)[:, None, None]      # (m,) -> (m, 1, 1) for broadcasting
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size          # pixel centres in (0, 1)
    y, x = coords[None, :, None], coords[None, None, :]                # (1, S, 1), (1, 1, S)
    ones = np.ones_like(p["label"])

    # Background: vertical blend of a pale sky-ish colour into a darker foliage green, plus a light spot.
    top = _hsv_to_rgb(p["bg_top_h"], p["bg_top_s"], 0.85 * ones)[:, None, None, :]   # (m, 1, 1, 3)
    bottom = _hsv_to_rgb(p["bg_bot_h"], 0.55 * ones, p["bg_bot_v"])[:, None, None, :]
    img = top + (bottom - top) * y[..., None]                                         # (m, S, 1, 3)
    spot = np.exp(-((x - col("spot_x")) ** 2 + (y - col("spot_y")) ** 2) / 0.02)      # (m, S, S)
    img = img + 0.25 * spot[..., None]

    cx, cy, radius = col("cx"), col("cy"), col("radius")
    # Stem: a slanted green band from the flower centre down to the bottom edge.
    stem_x = cx + col("stem_slope") * (y - cy)                                        # (m, S, 1)
    stem_d = col("stem_width") - np.abs(x - stem_x)                                   # (m, S, S)
    stem = _soft(stem_d, size) * (y > cy) * col("stem")
    green = np.array([0.18, 0.45, 0.15], np.float32)
    img = img + (green - img) * stem[..., None]

    # Petals: rose curve in polar coordinates around the centre.
    dx, dy = x - cx, y - cy
    r = np.sqrt(dx * dx + dy * dy)                                                    # (m, S, S)
    theta = np.arctan2(dy, dx)
    k = np.asarray(PETAL_COUNTS, np.float32)[p["label"].astype(int)][:, None, None]
    lobe = np.abs(np.cos(0.5 * k * (theta - col("phase")))) ** col("power")           # 1 on a petal axis
    petal_r = radius * (col("inner") + (1.0 - col("inner")) * lobe)
    shadow = 0.35 * _soft(1.06 * petal_r - r, size / 3.0)                             # soft drop shadow
    img = img * (1.0 - shadow[..., None])
    tip = _hsv_to_rgb(p["petal_h"], p["petal_s"], p["petal_v"])[:, None, None, :]
    base = _hsv_to_rgb(p["petal_h"], 0.35 * p["petal_s"], ones)[:, None, None, :]
    t = np.clip(r / petal_r, 0.0, 1.0)[..., None]
    petal = base + (tip * col("tip_dark")[..., None] - base) * t
    petal = petal * (0.8 + 0.2 * lobe[..., None])                                     # veins/shading
    petal_mask = _soft(petal_r - r, size)
    img = img + (petal - img) * petal_mask[..., None]

    # Centre disc with a radial speckle texture.
    centre_r = col("centre_frac") * radius
    centre = _hsv_to_rgb(p["centre_h"], 0.85 * ones, p["centre_v"])[:, None, None, :]
    texture = 0.85 + 0.15 * np.cos(r * (60.0 / np.maximum(centre_r, 1e-3)) + 3.0 * theta)
    centre_mask = _soft(centre_r - r, size)
    img = img + (centre * texture[..., None] - img) * centre_mask[..., None]
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def synthetic_flowers(image_size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n procedural flower images, a pure function of (image_size, n, seed) and cached.

    Returns images: uint8 (n, image_size, image_size, 3) and labels: int32 (n,) in [0, NUM_CLASSES),
    both read-only (the cache shares them). Image i depends only on (seed, i, image_size).
    """
    params = _draw_params(n, seed)
    images = np.empty((n, image_size, image_size, 3), np.uint8)
    chunk = max(1, _PIXELS_PER_CHUNK // (image_size * image_size))
    for start in range(0, n, chunk):
        part = {k: v[start:start + chunk] for k, v in params.items()}
        images[start:start + chunk] = np.round(_render(part, image_size) * 255.0).astype(np.uint8)
    labels = params["label"].astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
