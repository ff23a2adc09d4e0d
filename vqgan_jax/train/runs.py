"""The run folder contract, written by training and read by every later tool.

    DIR/vqgan/config.json      resolved stage-1 config      DIR/prior/config.json   stage-2 config
    DIR/vqgan/checkpoints/     orbax, one entry per step     DIR/prior/checkpoints/
    DIR/vqgan/metrics.jsonl    one JSON row per log step     DIR/prior/metrics.jsonl
    DIR/vqgan/images/*.png     originals over reconstructions
    DIR/vqgan/tb/              TensorBoard events            DIR/tokens/             token shards
    DIR/dcgan/...              a DCGAN (no stages): the same files; images/ holds fixed-noise grids
    DIR/diffusion/             the latent-diffusion prior (same layout as DIR/prior, + layout.json)
    DIR/latents/               the stage-1 latents it trains on (data.latents)
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

STAGES = ("vqgan", "prior", "dcgan", "diffusion", "vae")
# Config sections or dotted keys that define a part's parameters: changing them under an existing
# checkpoint is an error. Everything else (steps, logging, learning rates, sampling defaults) may change
# between runs, so a part can be trained longer or with other settings.
MODEL_SECTIONS = {"vqgan": ("model", "quantizer", "disc"),
                  "prior": ("prior.n_layer", "prior.n_head", "prior.n_embd", "prior.conditional"),
                  "dcgan": ("model",),
                  "vae": ("model", "disc"),
                  "diffusion": tuple(f"diffusion.{k}" for k in (
                      "latents", "model", "ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dit_patch",
                      "dit_hidden", "dit_depth", "dit_heads", "objective", "timesteps", "conditional"))}
# Keys added after run folders were first written, with the value an older config.json means.
DEFAULTS = {"ops": "auto", "model.name": "vqgan", "data.channels": 3}


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


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _defines_model(key: str, stage: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in MODEL_SECTIONS.get(stage, ()))


def write_config(workdir: str, stage: str, config) -> None:
    """Writes DIR/STAGE/config.json atomically; refuses to change the network of an existing run."""
    path = config_path(workdir, stage)
    new = config_to_dict(config)
    if os.path.exists(path):
        old, now = _flatten(read_config_dict(workdir, stage)), _flatten(new)
        # A key the old file lacks was added to the code since; it is not a change of network.
        changed = [k for k in sorted(old) if _defines_model(k, stage) and k in now and old[k] != now[k]]
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
    """DIR/STAGE/config.json as a dict; UserError when it is missing, not JSON, or not a config."""
    path = config_path(workdir, stage)
    if not os.path.exists(path):
        raise UserError(f"{path} not found: is {workdir!r} a vqgan_jax run folder with a trained {stage} stage?")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is damaged ({' '.join(str(e).split())[:80]}): restore it from a backup or "
                        "rewrite it by training again with the same --config") from None
    bad = ("it is not a JSON object" if not isinstance(config, dict) else
           next((f"its '{k}' is not a section" for k in ("data", "model", "train")
                 if k in config and not isinstance(config[k], dict)), None))
    if bad:
        raise UserError(f"{path} is not a vqgan_jax config ({bad}): restore it from a backup or rewrite it "
                        "by training again with the same --config")
    return config


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
    from vqgan_jax.train.checkpoint import stored_latest_step  # orbax import is slow: only when needed
    ck = checkpoint_dir(workdir, stage)
    if stored_latest_step(ck) is None:
        raise UserError(f"no {stage} checkpoint in {ck}: {hint}")
