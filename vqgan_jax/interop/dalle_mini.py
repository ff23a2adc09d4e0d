"""dalle-mini's Flax VQGAN (the `vqgan-jax` port, e.g. dalle-mini/vqgan_imagenet_f16_16384) as our VQGAN.

The model folder holds `config.json` (VQGANConfig: ch, ch_mult, num_res_blocks, attn_resolutions, resolution,
z_channels, n_embed, embed_dim, dropout, double_z, resamp_with_conv, give_pre_end) and `flax_model.msgpack`,
flax's msgpack serialisation of the parameter tree (read with `flax.serialization.msgpack_restore`: plain
data, no code). Its modules keep lists of blocks, so flax named them `down_1/block_0`, `down_1/attn_0`,
`down_1/downsample`, `mid/block_1`, `mid/attn_1`, `up_1/upsample` (up_i is level i, as in taming) and
`quantize/embedding/embedding`; ours fold the same indices into one name (`down_1_block_0`), and the leaves
(HWIO conv kernels, GroupNorm scale/bias, eps 1e-6, 32 groups) are the same arrays. No discriminator is
stored (dalle-mini only ran the model).
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.interop.taming import abstract_params, flat_paths, unflatten  # noqa: F401 (abstract_params: for convert)

CONFIG_FILE, WEIGHTS_FILE = "config.json", "flax_model.msgpack"


def sections_from_config(model_dir: str) -> dict:
    """model_dir/config.json -> our config sections ({'model', 'quantizer', 'data'} values)."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: --model_dir must be a dalle-mini VQGAN folder "
                        f"({CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        with open(path) as f:
            c = json.load(f)
        if c.get("double_z") or c.get("give_pre_end") or c.get("resamp_with_conv", True) is False:
            raise UserError(f"{path}: double_z / give_pre_end / resamp_with_conv=false models are not supported")
        return {
            "model": {"ch": int(c["ch"]), "ch_mult": tuple(int(m) for m in c["ch_mult"]),
                      "num_res_blocks": int(c["num_res_blocks"]),
                      "attn_resolutions": tuple(int(r) for r in c.get("attn_resolutions", ())),
                      "z_channels": int(c["z_channels"]), "dropout": float(c.get("dropout", 0.0))},
            "quantizer": {"num_codes": int(c["n_embed"]), "code_dim": int(c["embed_dim"]), "l2_normalize": False,
                          "ema": False},
            "data": {"image_size": int(c["resolution"])},
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path} is not a VQGANConfig ({type(e).__name__}: {e})") from None


def dalle_path(path: tuple[str, ...]) -> tuple[str, ...]:
    """Our flax param path (without 'params') -> dalle-mini's."""
    if path[-1] == "codebook":
        return ("quantize", "embedding", "embedding")
    out = []
    for s in path:
        m = re.fullmatch(r"(down|up)_(\d+)_(block|attn)_(\d+)", s)
        m2 = re.fullmatch(r"(down|up)_(\d+)_(downsample|upsample)", s)
        m3 = re.fullmatch(r"mid_(block|attn)_(\d+)", s)
        if m:
            out += [f"{m[1]}_{m[2]}", f"{m[3]}_{m[4]}"]
        elif m2:
            out += [f"{m2[1]}_{m2[2]}", m2[3]]
        elif m3:
            out += ["mid", s[len("mid_"):]]
        else:
            out.append(s)
    return tuple(out)


def _read_tree(path: str) -> dict:
    from flax import serialization
    if not os.path.isfile(path):
        raise UserError(f"{path} not found")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        tree = serialization.msgpack_restore(raw)
    except Exception as e:  # noqa: BLE001 - msgpack raises several types for a file that is not msgpack
        raise UserError(f"{path} is not a flax msgpack file ({type(e).__name__})") from None
    if isinstance(tree, dict) and "params" in tree and "encoder" not in tree:
        tree = tree["params"]
    if not isinstance(tree, dict) or "encoder" not in tree:
        raise UserError(f"{path} holds no VQGAN parameter tree (no 'encoder')")
    return tree


def vqgan_params(model_dir: str, abstract: dict) -> dict:
    """model_dir/flax_model.msgpack -> our VQGAN 'params' (float32), checked leaf by leaf against `abstract`."""
    path = os.path.join(model_dir, WEIGHTS_FILE)
    tree = _read_tree(path)
    out, used = {}, set()
    for p, leaf in flat_paths(abstract):
        q = dalle_path(p)
        node = tree
        for k in q:
            if not isinstance(node, dict) or k not in node:
                raise UserError(f"{path} has no {'/'.join(q)}, which {CONFIG_FILE}'s architecture needs")
            node = node[k]
        value = np.asarray(node, np.float32)
        if p[-1] in ("scale", "bias") and value.size == int(np.prod(leaf.shape)):
            value = value.reshape(leaf.shape)  # some conversions stored GroupNorm params as (1, 1, 1, C)
        if value.shape != tuple(leaf.shape):
            raise UserError(f"{path}: {'/'.join(q)} has shape {value.shape} but {CONFIG_FILE}'s architecture "
                            f"needs {tuple(leaf.shape)}")
        out[p] = value
        used.add(q)
    extra = sorted("/".join(q) for q, _ in _paths_plain(tree) if q not in used)
    if extra:
        raise UserError(f"{path} has weights {CONFIG_FILE}'s architecture has no place for ({', '.join(extra[:3])})")
    return unflatten(out)


def _paths_plain(tree: dict, prefix: tuple = ()):
    for k, v in tree.items():
        if isinstance(v, dict):
            yield from _paths_plain(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def write_model_dir(model_dir: str, params: dict, config: dict) -> None:
    """Writes our VQGAN 'params' in dalle-mini's layout (config.json + flax_model.msgpack); the test fixture's
    maker and the way back for JAX users of the old port."""
    from flax import serialization
    tree = unflatten({dalle_path(p): np.asarray(v, np.float32) for p, v in flat_paths(params)})
    os.makedirs(model_dir, exist_ok=True)
    m, q = config["model"], config["quantizer"]
    cfg = {"ch": int(m["ch"]), "out_ch": 3, "in_channels": 3, "ch_mult": [int(c) for c in m["ch_mult"]],
           "num_res_blocks": int(m["num_res_blocks"]), "attn_resolutions": [int(r) for r in m["attn_resolutions"]],
           "resolution": int(config["data"]["image_size"]), "z_channels": int(m["z_channels"]),
           "double_z": False, "n_embed": int(q["num_codes"]), "embed_dim": int(q["code_dim"]),
           "dropout": float(m["dropout"]), "resamp_with_conv": True, "give_pre_end": False}
    with open(os.path.join(model_dir, CONFIG_FILE), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(model_dir, WEIGHTS_FILE), "wb") as f:
        f.write(serialization.msgpack_serialize(tree))
