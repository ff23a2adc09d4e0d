"""The run folder contract, written by training and read by every later tool.

    DIR/vqgan/config.json      resolved stage-1 config      DIR/prior/config.json   stage-2 config
    DIR/vqgan/checkpoints/     orbax, one entry per step     DIR/prior/checkpoints/
    DIR/vqgan/metrics.jsonl    one JSON row per log step     DIR/prior/metrics.jsonl
    DIR/vqgan/images/*.png     originals over reconstructions
    DIR/vqgan/tb/              TensorBoard events            DIR/tokens/             token shards
    DIR/vae/...                the VAE (same layout; images/ holds fixed-noise samples, images/reconstructions/)

A run folder is self-describing (nanoGPT's habit): the config saved beside the checkpoints is enough
to rebuild the models, so `sample.py --workdir DIR` needs nothing else.
"""
from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from vqgan_jax.errors import UserError

STAGES = ("vqgan", "prior", "vae")
# Sections that define the network: changing them under an existing checkpoint is an error.
MODEL_SECTIONS = {"vqgan": ("model", "quantizer", "disc"), "prior": ("prior",), "vae": ("model", "disc")}
# Keys added after run folders were first written, with the value an older config.json means.
DEFAULTS = {"ops": "auto", "model.name": "vqgan"}


def stage_dir(workdir: str, stage: str) -> str:
    return os.path.join(workdir, stage)


def config_path(workdir: str, stage: str) -> str:
    return os.path.join(stage_dir(workdir, stage), "config.json")


def checkpoint_dir(workdir: str, stage: str) -> str:
    return os.path.join(stage_dir(workdir, stage), "checkpoints")


def tokens_dir(workdir: str) -> str:
    return os.path.join(workdir, "tokens")


def _as_plain(value: Any) -> Any:
    if isinstance(value, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict, dict)):
        return {k: _as_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_plain(v) for v in value]
    return value


def config_to_dict(config) -> dict:
    return _as_plain(config)


def write_config(workdir: str, stage: str, config) -> None:
    """Writes DIR/STAGE/config.json atomically; refuses to change the network of an existing run."""
    path = config_path(workdir, stage)
    new = config_to_dict(config)
    if os.path.exists(path):
        old = read_config_dict(workdir, stage)
        # A key the old file lacks was added to the code since; it is not a change of network.
        changed = [f"{sec}.{k}" for sec in MODEL_SECTIONS[stage]
                   for k in sorted(set(old.get(sec, {})) | set(new.get(sec, {})))
                   if k in old.get(sec, {}) and old.get(sec, {}).get(k) != new.get(sec, {}).get(k)]
        if changed:
            raise UserError(
                f"{path} was written for a different network ({', '.join(changed[:4])} changed); "
                "use a new --workdir, or the same model settings to resume")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(new, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def read_config_dict(workdir: str, stage: str) -> dict:
    path = config_path(workdir, stage)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: is {workdir!r} a vqgan_jax run folder with a trained {stage} stage?")
    with open(path) as f:
        return json.load(f)


def with_defaults(config: dict) -> dict:
    """A config dict with the keys of DEFAULTS filled in where an older run folder lacks them."""
    config = dict(config)
    for dotted, value in DEFAULTS.items():
        *sections, key = dotted.split(".")
        node = config
        for sec in sections:
            node = node.setdefault(sec, {})
        node.setdefault(key, value)
    return config


def read_config(workdir: str, stage: str) -> ml_collections.ConfigDict:
    """The saved config as a ConfigDict (tuples come back as lists; the model builders accept both), with
    keys added since older run folders were written filled in (DEFAULTS)."""
    return ml_collections.ConfigDict(with_defaults(read_config_dict(workdir, stage)))


def require_checkpoint(workdir: str, stage: str, hint: str) -> None:
    from vqgan_jax.train.checkpoint import Checkpointer  # orbax import is slow: only when needed
    ck = checkpoint_dir(workdir, stage)
    if not os.path.isdir(ck) or Checkpointer(ck, async_save=False).latest_step() is None:
        raise UserError(f"no {stage} checkpoint in {ck}: {hint}")
