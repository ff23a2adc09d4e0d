"""What style transfer writes: the stylised images, their strips (the image every few steps, side by side)
and the style-weight sweep grid. Images come as float32 (B, H, W, 3) in [0, 1]."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from vqgan_jax.viz import images as images_lib


def to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def strip(frames: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Frames float32 (H_i, W_i, 3) in [0, 1] (coarse scales smaller) -> uint8 (H, sum W + pads, 3), every
    frame resized to the last one's size, left to right."""
    h, w = frames[-1].shape[:2]
    tiles = [np.asarray(Image.fromarray(to_uint8(f)).resize((w, h), Image.NEAREST)) for f in frames]
    return images_lib.grid(np.stack(tiles), ncols=len(tiles), pad=pad)


def write_outputs(args, outputs: list[str], names: list[str], results: list[np.ndarray],
                  strips: list[list[np.ndarray]], weights: list[float]) -> list[str]:
    """Writes the paths `outputs` lists: a sweep grid (one image per weight), or each image (and its strip)."""
    if args.sweep:
        images_lib.save_png(outputs[0], images_lib.grid(np.stack([to_uint8(r[0]) for r in results]),
                                                        ncols=len(results)))
        return outputs
    written = []
    for i, image in enumerate(results[0]):
        path = os.path.join(args.out, names[i]) if os.path.isdir(args.content) else args.out
        images_lib.save_png(path, to_uint8(image))
        written.append(path)
        if args.strip and strips[0]:
            strip_path = os.path.splitext(path)[0] + "_strip.png"
            images_lib.save_png(strip_path, strip([frame[i] for frame in strips[0]]))
            written.append(strip_path)
    return written
