"""Pictures of how a run trained, for each part present (DIR/vqgan, DIR/prior): the evolution montage of
its image grids (the Flowers102 VQGAN + GPT-2 study's epoch-by-epoch picture) and its loss curves.

    DIR/pictures/<stage>/evolution.png     one row per chosen step (stage 1: originals once, on top)
    DIR/pictures/<stage>/loss_curves.png   one panel per quantity, training and held-out together
"""
from __future__ import annotations

import os

from vqgan_jax.errors import UserError
from vqgan_jax.train import runs
from vqgan_jax.train.metrics import MetricWriter, read_metrics
from vqgan_jax.viz.curves import loss_curves
from vqgan_jax.viz.montage import _load_rgb, evolution_montage, list_step_images


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
