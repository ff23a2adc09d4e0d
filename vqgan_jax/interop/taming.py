"""taming-transformers VQModel weights <-> vqgan_jax parameter trees, name by name.

Our modules carry taming's names with its ModuleList indices folded in (`down_1_block_0` is taming's
`down.1.block.0`, `mid_attn_1` is `mid.attn_1`, `up_1_upsample` is `up.1.upsample`), so the mapping is a
rule, not a table:

    flax  params/encoder/down_1_attn_0/q/kernel  (kh, kw, C_in, C_out)   HWIO
    torch encoder.down.1.attn.0.q.weight         (C_out, C_in, kh, kw)   OIHW
    flax  .../norm1/scale, .../norm1/bias        torch .../norm1.weight, .../norm1.bias     (GroupNorm)
    flax  quantize/codebook (K, D)               torch quantize.embedding.weight (K, D)

The architecture details that matter for equal outputs are the same in both: GroupNorm(32 groups for widths
that are multiples of 32, eps 1e-6), the stride-2 downsampling conv after a (0, 1, 0, 1) pad, single-head
attention with 1x1 q/k/v/proj_out convs and a C^-1/2 scale, nearest upsampling then a 3x3 conv
(`vqgan_jax.nn.layers`). Every expected weight must be in the checkpoint with the shape the YAML implies,
and every encoder/decoder/quantizer weight in the checkpoint must be used: no partial loads.

The discriminator (taming's NLayerDiscriminator in `loss.discriminator.main.*`) maps onto
`PatchDiscriminator(norm='affine')`: main.0 -> conv_0, main.{3n-1} -> conv_n, main.{3n} -> norm_n, the last
conv -> conv_out. Its BatchNorm in eval mode is y = w (x - mean) / sqrt(var + 1e-5) + b, folded into
scale = w / sqrt(var + 1e-5), bias = b - mean * scale; an ActNorm y = s (conv(x) + c + loc) into scale = s,
bias = s (c + loc). Export writes the affine back as a BatchNorm with mean 0 and var 1 - 1e-5.
"""
from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError

_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which NLayerDiscriminator uses
_PARTS = ("encoder.", "decoder.", "quantize.", "quant_conv.", "post_quant_conv.")


def _module_name(segment: str) -> str:
    m = re.fullmatch(r"(down|up)_(\d+)_(block|attn)_(\d+)", segment)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}.{m[4]}"
    m = re.fullmatch(r"(down|up)_(\d+)_(downsample|upsample)", segment)
    if m:
        return f"{m[1]}.{m[2]}.{m[3]}"
    m = re.fullmatch(r"mid_(block|attn)_(\d+)", segment)
    if m:
        return f"mid.{m[1]}_{m[2]}"
    return segment


def torch_name(path: tuple[str, ...]) -> str:
    """A VQGAN flax param path (without 'params') -> its taming state_dict key."""
    *modules, leaf = path
    if leaf == "codebook":
        return "quantize.embedding.weight"
    return ".".join([_module_name(s) for s in modules] + ["bias" if leaf == "bias" else "weight"])


def _to_flax(value: np.ndarray, leaf: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    return value.transpose(2, 3, 1, 0) if leaf == "kernel" and value.ndim == 4 else value


def _to_torch(value: np.ndarray, leaf: str) -> np.ndarray:
    value = np.asarray(value, np.float32)
    return np.ascontiguousarray(value.transpose(3, 2, 0, 1)) if leaf == "kernel" else value


def flat_paths(tree: Any) -> list[tuple[tuple[str, ...], Any]]:
    return [(tuple(str(k.key) for k in p), leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]


def unflatten(items: dict[tuple[str, ...], np.ndarray]) -> dict:
    out: dict = {}
    for path, value in items.items():
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = value
    return out


def abstract_params(module, image_size: int) -> dict:
    """The 'params' shapes `module` (a VQGAN or a discriminator) has at `image_size` (no arrays made)."""
    x = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    key = jax.random.PRNGKey(0)
    shapes = jax.eval_shape(lambda: module.init({"params": key, "vq": key, "dropout": key}, x, train=False))
    return shapes["params"]


def _expect(sd: dict, name: str, shape: tuple, path: str, what: str) -> np.ndarray:
    if name not in sd:
        raise UserError(f"{path} has no {name}, which the {what} needs: does the YAML belong to this checkpoint?")
    value = sd[name]
    if tuple(value.shape) != tuple(shape):
        raise UserError(f"{path}: {name} has shape {tuple(value.shape)} but the {what} needs {tuple(shape)}: "
                        "does the YAML belong to this checkpoint?")
    return value


def vqgan_params(sd: dict[str, np.ndarray], abstract: dict, path: str) -> dict:
    """taming state_dict -> our VQGAN 'params' (float32 numpy), checked against `abstract` (its shapes)."""
    out, used = {}, set()
    for p, leaf in flat_paths(abstract):
        name = torch_name(p)
        want = leaf.shape if p[-1] != "kernel" else (leaf.shape[3], leaf.shape[2], *leaf.shape[:2])
        out[p] = _to_flax(_expect(sd, name, want, path, "architecture in the YAML"), p[-1])
        used.add(name)
    extra = sorted(k for k in sd if k.startswith(_PARTS) and k not in used)
    if extra:
        raise UserError(f"{path} has weights the YAML's architecture has no place for ({', '.join(extra[:3])}"
                        f"{', ...' if len(extra) > 3 else ''}): does the YAML belong to this checkpoint?")
    return unflatten(out)


def vqgan_state_dict(params: dict) -> dict[str, np.ndarray]:
    """Our VQGAN 'params' -> taming state_dict entries (float32, OIHW convs)."""
    return {torch_name(p): _to_torch(np.asarray(v), p[-1]) for p, v in flat_paths(params)}


def _disc_layout(n_layers: int) -> dict[str, int]:
    """Our discriminator module names -> the index of taming's `main` Sequential holding them."""
    layout = {"conv_0": 0, "conv_out": 3 * n_layers + 2}
    for n in range(1, n_layers + 1):
        layout[f"conv_{n}"], layout[f"norm_{n}"] = 3 * n - 1, 3 * n
    return layout


def disc_params(sd: dict[str, np.ndarray], abstract: dict, n_layers: int, path: str) -> dict:
    """taming `loss.discriminator.main.*` -> our PatchDiscriminator(norm='affine') 'params' (float32)."""
    layout, out = _disc_layout(n_layers), {}
    pre = "loss.discriminator.main"
    what = "discriminator in the YAML"
    for p, leaf in flat_paths(abstract):
        module, name = p[0], p[-1]
        i = layout[module]
        if module.startswith("conv"):
            if name == "kernel":
                shape = (leaf.shape[3], leaf.shape[2], *leaf.shape[:2])
                out[p] = _to_flax(_expect(sd, f"{pre}.{i}.weight", shape, path, what), "kernel")
            else:
                out[p] = np.asarray(_expect(sd, f"{pre}.{i}.bias", leaf.shape, path, what), np.float32)
            continue
        c = leaf.shape[0]
        if f"{pre}.{i}.running_mean" in sd:                      # BatchNorm2d, eval mode
            w, b, mean, var = (np.asarray(_expect(sd, f"{pre}.{i}.{k}", (c,), path, what), np.float64)
                               for k in ("weight", "bias", "running_mean", "running_var"))
            scale = w / np.sqrt(var + _BN_EPS)
            shift = b - mean * scale
        elif f"{pre}.{i}.loc" in sd:                             # ActNorm after a conv with a bias
            s, loc = (np.asarray(_expect(sd, f"{pre}.{i}.{k}", (1, c, 1, 1), path, what), np.float64).reshape(c)
                      for k in ("scale", "loc"))
            conv_bias = np.asarray(_expect(sd, f"{pre}.{i - 1}.bias", (c,), path, what), np.float64)
            scale, shift = s, s * (conv_bias + loc)
        else:
            raise UserError(f"{path} has no BatchNorm or ActNorm statistics at {pre}.{i}: does the YAML's "
                            "disc_num_layers match the checkpoint?")
        out[p] = (scale if name == "scale" else shift).astype(np.float32)
    return unflatten(out)


def disc_state_dict(params: dict, n_layers: int) -> dict[str, np.ndarray]:
    """Our PatchDiscriminator(norm='affine') 'params' -> taming BatchNorm discriminator entries."""
    layout, sd = _disc_layout(n_layers), {}
    pre = "loss.discriminator.main"
    for p, value in flat_paths(params):
        module, name = p[0], p[-1]
        i = layout[module]
        if module.startswith("conv"):
            sd[f"{pre}.{i}.{'weight' if name == 'kernel' else 'bias'}"] = _to_torch(np.asarray(value), name)
        else:
            c = np.asarray(value).shape[0]
            sd[f"{pre}.{i}.{'weight' if name == 'scale' else 'bias'}"] = np.asarray(value, np.float32)
            sd[f"{pre}.{i}.running_mean"] = np.zeros(c, np.float32)
            sd[f"{pre}.{i}.running_var"] = np.full(c, 1.0 - _BN_EPS, np.float32)
            sd[f"{pre}.{i}.num_batches_tracked"] = np.zeros((), np.int64)
    return sd
