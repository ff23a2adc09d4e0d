"""The encoded training set of the latent-diffusion prior: stage-1 latents cached once, like token shards.

    DIR/latents/meta.json              {source, kind, shape [h, w, c], count, stage_step, flip, num_classes,
                                        class_names, std, scale}
    DIR/latents/shard_P_NNNNN.npz      latents: float16 (N, h, w, c), labels: int32 (N,)   (P = process)

`train.latent_source.encode_training_set` writes the shards and then meta.json (so a meta file always
describes complete shards); a later `--stage diffusion` reuses them when they came from the same stage-1
checkpoint and settings. `scale` = 1 / std of every latent value of the training set (Stable Diffusion's
0.18215 measured the same way): the diffusion model sees latents * scale, of unit variance.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np

from vqgan_jax.errors import UserError

SHARD_SIZE = 2048  # images per shard file


def meta_path(latents_dir: str) -> str:
    return os.path.join(latents_dir, "meta.json")


def read_meta(latents_dir: str) -> dict | None:
    """DIR/latents/meta.json as a dict, or None when the folder holds no latents yet."""
    path = meta_path(latents_dir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_meta(latents_dir: str, meta: dict) -> None:
    os.makedirs(latents_dir, exist_ok=True)
    with open(meta_path(latents_dir) + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path(latents_dir) + ".tmp", meta_path(latents_dir))


def shard_paths(latents_dir: str, process_index: int) -> list[str]:
    return sorted(glob.glob(os.path.join(latents_dir, f"shard_{process_index}_*.npz")))


def save_shard(latents_dir: str, name: str, latents: np.ndarray, labels: np.ndarray) -> str:
    """Writes latents float16 (N, h, w, c) + labels int32 (N,) atomically; returns the path."""
    os.makedirs(latents_dir, exist_ok=True)
    path = os.path.join(latents_dir, name)
    tmp = path + ".tmp.npz"
    np.savez(tmp, latents=latents.astype(np.float16), labels=labels.astype(np.int32))
    os.replace(tmp, path)
    return path


def load_latents(latents_dir: str, process_index: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """This process's shards: (latents float32 (N, h, w, c) unscaled, labels int32 (N,), meta)."""
    meta = read_meta(latents_dir)
    if meta is None:
        raise UserError(f"no latents in {latents_dir}: run train.py --stage diffusion to encode them")
    files = shard_paths(latents_dir, process_index)
    if not files:
        raise UserError(f"{latents_dir} has meta.json but no shards: delete the folder and rerun")
    xs, labels = [], []
    for f in files:
        with np.load(f) as z:
            xs.append(z["latents"].astype(np.float32))
            labels.append(z["labels"])
    return np.concatenate(xs), np.concatenate(labels), meta

