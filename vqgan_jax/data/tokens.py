"""Token grids for the autoregressive prior: the vocabulary layout and the encoded training set.

    DIR/tokens/meta.json              {num_codes, grid, count, vqgan_step, flip, num_classes, ...}
    DIR/tokens/shard_P_NNNNN.npz      ids: uint16 (N, h, w), labels: int32 (N,), pos: int64 (N,)
                                      (P = process index; pos = the row's place in the one-process order)

The autoregressive prior's trainer writes the shards once (`trainers.ar_prior.encode_training_set`); a
later `--stage prior` reuses them when they were made from the same checkpoint. `PriorTokens` says how a
grid of codes becomes a GPT-2 sequence. Every function takes the tokens folder (DIR/tokens).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError

SHARD_SIZE = 4096  # images per shard file


@dataclasses.dataclass(frozen=True)
class PriorTokens:
    """How token grids become GPT-2 sequences (static).

    Codes are 0..num_codes-1; `null_token` = num_codes starts an unconditional sequence (and is the
    dropped-label token for classifier-free guidance); class c starts with num_codes + 1 + c.
    """
    num_codes: int
    num_classes: int = 0

    @property
    def null_token(self) -> int:
        return self.num_codes

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 1 + self.num_classes

    def first_token(self, labels: jax.Array | None) -> jax.Array:
        """labels int32 (B,) or None -> the start tokens int32 (B,)."""
        if labels is None or self.num_classes == 0:
            return jnp.full(() if labels is None else labels.shape, self.null_token, jnp.int32)
        return self.num_codes + 1 + labels.astype(jnp.int32)


def meta_path(tokens_dir: str) -> str:
    return os.path.join(tokens_dir, "meta.json")


def read_meta(tokens_dir: str) -> dict | None:
    """DIR/tokens/meta.json as a dict, or None when the folder holds no tokens yet."""
    path = meta_path(tokens_dir)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError):
        meta = None
    if not isinstance(meta, dict) or not {"num_codes", "grid", "count"} <= set(meta):
        # Damaged: the shards are encoded again from the checkpoint (they are a cache).
        logging.warning("warning: %s is damaged; the tokens will be encoded again", path)
        return None
    return meta


def write_meta(tokens_dir: str, meta: dict) -> None:
    """Writes meta.json atomically (after the shards, so a meta file always describes complete shards)."""
    os.makedirs(tokens_dir, exist_ok=True)
    with open(meta_path(tokens_dir) + ".tmp", "w") as f:
        json.dump(meta, f, indent=2)
    os.replace(meta_path(tokens_dir) + ".tmp", meta_path(tokens_dir))


def shard_paths(tokens_dir: str, process_index: int) -> list[str]:
    """This process's shard files, in order."""
    return sorted(glob.glob(os.path.join(tokens_dir, f"shard_{process_index}_*.npz")))


def save_shard(directory: str, name: str, ids: np.ndarray, labels: np.ndarray, pos: np.ndarray | None = None) -> str:
    """Writes ids uint16 (N, h, w) + labels int32 (N,) (+ pos int64 (N,): each row's place in the
    one-process order) atomically; returns the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    tmp = path + ".tmp.npz"
    extra = {} if pos is None else {"pos": np.asarray(pos, np.int64)}
    np.savez(tmp, ids=ids.astype(np.uint16), labels=labels.astype(np.int32), **extra)
    os.replace(tmp, path)
    return path


def load_tokens(tokens_dir: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Every process's shards, in the one-process order: (ids int32 (N, h*w), labels int32 (N,), meta).

    The same arrays in every process of a job, whatever the number of processes that encoded them
    (shards written before rows carried their place are this process's own, in file order)."""
    meta = read_meta(tokens_dir)
    if meta is None:
        raise UserError(f"no tokens in {tokens_dir}: run train.py --stage prior to encode them")
    files = sorted(glob.glob(os.path.join(tokens_dir, "shard_*_*.npz")))
    if not files:
        raise UserError(f"{tokens_dir} has meta.json but no shards: delete the folder and rerun")
    ids, labels, pos = [], [], []
    for f in files:
        try:
            with np.load(f) as z:
                ids.append(z["ids"].astype(np.int32))
                labels.append(z["labels"])
                pos.append(z["pos"] if "pos" in z.files else None)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"the token shard {f} is damaged ({type(e).__name__}): delete {tokens_dir} and run "
                            "train.py --stage prior again to encode the tokens anew") from None
    if any(p is None for p in pos):  # an older folder: this process's shards as they are
        own = set(shard_paths(tokens_dir, jax.process_index()))
        keep = [i for i, f in enumerate(files) if f in own]
        ids, labels = [ids[i] for i in keep], [labels[i] for i in keep]
        order = None
    else:
        order = np.argsort(np.concatenate(pos), kind="stable")
    ids, labels = np.concatenate(ids), np.concatenate(labels)
    if order is not None:
        ids, labels = ids[order], labels[order]
    return ids.reshape(ids.shape[0], -1), labels, meta


def sequence_length(meta: dict) -> int:
    """GPT-2 positions of one grid: the start (class) token plus h * w codes."""
    return 1 + int(np.prod(meta["grid"]))
