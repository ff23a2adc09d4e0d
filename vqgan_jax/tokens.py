"""Token shards: the training set encoded once by the stage-1 VQGAN, for the prior.

    DIR/tokens/meta.json              {num_codes, grid, count, vqgan_step, flip, num_classes, ...}
    DIR/tokens/shard_P_NNNNN.npz      ids: uint16 (N, h, w), labels: int32 (N,)   (P = process index)

Encoding runs jitted and sharded over the mesh, with the EMA generator weights when the run has
them. A later `--stage prior` reuses the shards when they were made from the same checkpoint.
"""
from __future__ import annotations

import glob
import json
import os

import jax
import numpy as np

from vqgan_jax import parallel, runs
from vqgan_jax.checkpoint import Checkpointer
from vqgan_jax.errors import UserError

SHARD_SIZE = 4096  # images per shard file


def meta_path(workdir: str) -> str:
    return os.path.join(runs.tokens_dir(workdir), "meta.json")


def read_meta(workdir: str) -> dict | None:
    path = meta_path(workdir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def save_shard(directory: str, name: str, ids: np.ndarray, labels: np.ndarray) -> str:
    """Writes ids uint16 (N, h, w) + labels int32 (N,) atomically; returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    tmp = path + ".tmp.npz"
    np.savez(tmp, ids=ids.astype(np.uint16), labels=labels.astype(np.int32))
    os.replace(tmp, path)
    return path


def load_tokens(workdir: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """All shards of this process: (ids int32 (N, h*w), labels int32 (N,), meta)."""
    meta = read_meta(workdir)
    if meta is None:
        raise UserError(f"no tokens in {runs.tokens_dir(workdir)}: run train.py --stage prior to encode them")
    files = sorted(glob.glob(os.path.join(runs.tokens_dir(workdir), f"shard_{jax.process_index()}_*.npz")))
    if not files:
        raise UserError(f"{runs.tokens_dir(workdir)} has meta.json but no shards: delete the folder and rerun")
    ids, labels = [], []
    for f in files:
        with np.load(f) as z:
            ids.append(z["ids"].astype(np.int32))
            labels.append(z["labels"])
    ids = np.concatenate(ids)
    return ids.reshape(ids.shape[0], -1), np.concatenate(labels), meta


def encode_training_set(workdir: str, vq_config, setup, state, vqgan_step: int, *, flip: bool,
                        batch_size: int | None = None) -> dict:
    """Encodes the stage-1 training split into token shards (or reuses matching ones).

    vq_config: the stage-1 config (its data section says what to read). setup/state: a VQGANSetup
    and its restored state. Returns the meta dict.
    """
    from vqgan_jax import data as data_lib  # tf.data only where data is read (see stage1.train_vqgan)
    meta = read_meta(workdir)
    if meta is not None and meta.get("vqgan_step") == vqgan_step and meta.get("flip") == flip:
        print(f"reusing {meta['count']} token grids in {runs.tokens_dir(workdir)} "
              f"(made from stage-1 step {vqgan_step})", flush=True)
        return meta
    out = runs.tokens_dir(workdir)
    for old in glob.glob(os.path.join(out, f"shard_{jax.process_index()}_*.npz")):
        os.remove(old)
    mesh = setup.mesh
    n_dev = mesh.devices.size
    bs = batch_size or max(n_dev, (64 // n_dev) * n_dev)
    ds = data_lib.make_dataset(vq_config.data, split="train", global_batch_size=bs, seed=0, training=False,
                               process_index=jax.process_index(), process_count=jax.process_count(),
                               repeat=False)
    variables = setup.eval_variables(state)
    model = setup.model

    def encode(variables, x):
        ids = model.apply(variables, x, method=type(model).encode_to_ids)
        if not flip:
            return ids, ids
        return ids, model.apply(variables, x[:, :, ::-1, :], method=type(model).encode_to_ids)

    enc = jax.jit(encode, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                  out_shardings=parallel.replicated(mesh))
    buf_ids, buf_labels, shard, count, grid = [], [], 0, 0, None
    for batch in data_lib.iterate_numpy(ds):
        g = parallel.global_batch(batch, mesh)
        ids, ids_flip = jax.device_get(enc(variables, g["image"]))
        # Each process keeps its own rows of the global batch (its local data).
        local = slice(jax.process_index() * len(batch["label"]), (jax.process_index() + 1) * len(batch["label"]))
        ids, ids_flip = np.asarray(ids)[local], np.asarray(ids_flip)[local]
        grid = ids.shape[1:]
        buf_ids.append(ids)
        buf_labels.append(batch["label"])
        if flip:
            buf_ids.append(ids_flip)
            buf_labels.append(batch["label"])
        count += len(ids) * (2 if flip else 1)
        if sum(len(b) for b in buf_ids) >= SHARD_SIZE:
            save_shard(out, f"shard_{jax.process_index()}_{shard:05d}.npz",
                       np.concatenate(buf_ids), np.concatenate(buf_labels))
            buf_ids, buf_labels, shard = [], [], shard + 1
    if buf_ids:
        save_shard(out, f"shard_{jax.process_index()}_{shard:05d}.npz",
                   np.concatenate(buf_ids), np.concatenate(buf_labels))
    if count == 0:
        raise UserError(f"no training images were encoded (fewer than one batch of {bs}?)")
    meta = {"num_codes": int(vq_config.quantizer.num_codes), "grid": list(grid), "count": count,
            "vqgan_step": int(vqgan_step), "flip": bool(flip), "num_classes": int(vq_config.data.num_classes),
            "class_names": list(data_lib.dataset_info(vq_config.data).get("class_names", []))}
    if jax.process_index() == 0:
        with open(meta_path(workdir) + ".tmp", "w") as f:
            json.dump(meta, f, indent=2)
        os.replace(meta_path(workdir) + ".tmp", meta_path(workdir))
    print(f"encoded {count} token grids of {grid[0]}x{grid[1]} into {out}", flush=True)
    return meta


def restore_vqgan(workdir: str):
    """Rebuilds the stage-1 model from DIR/vqgan alone: (config, VQGANSetup, state, step)."""
    from vqgan_jax.stage1 import VQGANSetup
    runs.require_checkpoint(workdir, "vqgan", f"train stage 1 first: python train.py --config ... --workdir {workdir}")
    config = runs.read_config(workdir, "vqgan")
    setup = VQGANSetup.shared(config)
    ckpt = Checkpointer(runs.checkpoint_dir(workdir, "vqgan"), async_save=False)
    step = ckpt.latest_step()
    state = ckpt.restore(setup.abstract_state(), step)
    return config, setup, state, step


def sequence_length(meta: dict) -> int:
    return 1 + int(np.prod(meta["grid"]))
