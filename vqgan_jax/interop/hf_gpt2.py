"""Hugging Face GPT-2 interop: parameter trees <-> HF state dicts and config.json + safetensors folders.

Our `GPT2LMHead` uses HF's names, so the mapping is a rule, not a table: the path
`h_0/attn/c_attn/kernel` is HF's `transformer.h.0.attn.c_attn.weight`; Dense 'kernel', LayerNorm 'scale'
and Embed 'embedding' are all HF's 'weight'; 'bias' stays 'bias'. No tensor is transposed (HF's Conv1D
stores (in, out), as a Dense kernel does). `lm_head.weight` is tied to `transformer.wte.weight`.

Also here: `resize_for_prior`, which turns a pretrained GPT-2 into the starting point of a prior over
VQGAN codes (new token and position embeddings, same transformer blocks).
"""
import copy
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.flax
import safetensors.numpy
from flax import traverse_util
from transformers import GPT2Config

from vqgan_jax.errors import UserError
from vqgan_jax.models.gpt2 import GPT2LMHeadModel, check_config

_PREFIX = "transformer."
_LEAF_TO_HF = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# Non-parameter buffers older transformers versions saved with each attention layer.
_BUFFER = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")
_WEIGHTS = "model.safetensors"
_WEIGHTS_INDEX = "model.safetensors.index.json"


def hf_name(path: tuple[str, ...]) -> str:
    """('h_0', 'attn', 'c_attn', 'kernel') -> 'h.0.attn.c_attn.weight' (without the 'transformer.' prefix)."""
    parts = [f"h.{p[2:]}" if re.fullmatch(r"h_\d+", p) else p for p in path[:-1]]
    return ".".join(parts + [_LEAF_TO_HF[path[-1]]])


def param_shapes(config: GPT2Config) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Flat {path: shape} of the parameters a GPT2LMHead built from `config` has (nothing is initialised)."""
    model = GPT2LMHeadModel(config)
    tree = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))["params"]
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(tree).items()}


def params_from_hf_state_dict(state: dict, config: GPT2Config) -> dict:
    """HF GPT-2 state dict (GPT2LMHeadModel's 'transformer.'-prefixed names or GPT2Model's bare ones) ->
    our params tree of float32 arrays.

    Raises UserError naming the tensors that are missing, unexpected or of the wrong shape, or when an
    `lm_head.weight` that differs from `wte` asks for an untied head. Attention mask buffers are ignored.
    """
    check_config(config)
    named = {}
    for key, value in state.items():
        name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
        if name in named:
            raise UserError(f"GPT-2 checkpoint holds {name!r} twice (with and without {_PREFIX!r})")
        named[name] = value
    lm_head = named.pop("lm_head.weight", None)
    expected = {hf_name(path): (path, shape) for path, shape in param_shapes(config).items()}
    missing = sorted(set(expected) - set(named))
    unexpected = sorted(k for k in named if k not in expected and not _BUFFER.fullmatch(k))
    if missing or unexpected:
        raise UserError(f"GPT-2 checkpoint does not match its config: missing {missing[:5]}"
                        f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                        f"{' ...' if len(unexpected) > 5 else ''}")
    flat = {}
    for name, (path, shape) in expected.items():
        array = np.asarray(named[name], dtype=np.float32)
        if array.shape != shape:
            raise UserError(f"GPT-2 tensor {name} has shape {array.shape}, the config needs {shape}")
        flat[path] = array
    if lm_head is not None and not np.array_equal(np.asarray(lm_head, np.float32), flat[("wte", "embedding")]):
        raise UserError("GPT-2 checkpoint has an lm_head.weight that differs from wte: untied heads are not supported")
    return traverse_util.unflatten_dict(flat)


def params_to_hf_state_dict(params) -> dict[str, np.ndarray]:
    """Our params tree -> {'transformer.h.0.attn.c_attn.weight': float32 ndarray, ...}.

    `lm_head.weight` is left out: it is tied to `transformer.wte.weight`, and HF's own save_pretrained
    also stores the tied tensor once.
    """
    flat = traverse_util.flatten_dict(params)
    return {_PREFIX + hf_name(path): np.ascontiguousarray(np.asarray(leaf, np.float32))
            for path, leaf in flat.items()}


def _load_state(directory: Path) -> dict:
    """Every tensor of model.safetensors (or of the shards a model.safetensors.index.json names)."""
    if (directory / _WEIGHTS).is_file():
        files = [directory / _WEIGHTS]
    elif (directory / _WEIGHTS_INDEX).is_file():
        weight_map = json.loads((directory / _WEIGHTS_INDEX).read_text())["weight_map"]
        files = [directory / f for f in sorted(set(weight_map.values()))]
    else:
        found = ", ".join(sorted(p.name for p in directory.iterdir())) or "nothing"
        raise UserError(f"{directory} has no {_WEIGHTS} (found: {found}); save the model with safetensors")
    state = {}
    for f in files:
        if not f.is_file():
            raise UserError(f"GPT-2 weights shard {f} is missing")
        try:  # the flax loader also reads bfloat16 tensors, which numpy cannot hold
            state.update(safetensors.flax.load_file(f))
        except safetensors.SafetensorError as e:
            raise UserError(f"{f} is not a readable safetensors file: {e}") from e
    return state


def from_pretrained(directory) -> tuple[GPT2Config, dict]:
    """Reads a Hugging Face GPT-2 folder (config.json + model.safetensors), local files only.

    Returns (config, params) with params a float32 tree for `GPT2LMHeadModel(config)`. Anything that
    is not a complete GPT-2 checkpoint raises UserError with one line saying what is wrong.
    """
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise UserError(f"{directory} is not a Hugging Face model folder: it has no config.json")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except json.JSONDecodeError as e:
        raise UserError(f"{config_file} is not valid JSON: {e}") from e
    if model_type != "gpt2":
        raise UserError(f"{directory} holds a {model_type!r} model, not GPT-2 (config.json model_type must be 'gpt2')")
    config = GPT2Config.from_pretrained(directory, local_files_only=True)
    params = params_from_hf_state_dict(_load_state(directory), config)
    return config, params


def save_pretrained(directory, config: GPT2Config, params) -> None:
    """Writes config.json + model.safetensors that transformers' PyTorch `GPT2LMHeadModel.from_pretrained`
    loads (lm_head tied to wte) and that `from_pretrained` above reads back bit for bit."""
    directory = Path(directory)
    state = params_to_hf_state_dict(params)
    params_from_hf_state_dict(state, config)  # refuses params that do not fit the config before writing
    config = copy.deepcopy(config)
    config.architectures = ["GPT2LMHeadModel"]
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    safetensors.numpy.save_file(state, directory / _WEIGHTS, metadata={"format": "pt"})


def resize_for_prior(config: GPT2Config, params, *, vocab_size: int, n_positions: int,
                     rng) -> tuple[GPT2Config, dict]:
    """A pretrained GPT-2 reshaped into the start of a prior over `vocab_size` codes and `n_positions` positions.

    The transformer blocks and ln_f are kept. The token embedding (and so the tied head) is new, drawn
    from N(0, initializer_range); the position embedding keeps the first min(old, new) rows of the
    pretrained wpe and draws the rest the same way. Special token ids outside the new vocabulary are
    cleared. Returns (new config, new params); the input params are not changed.
    """
    if vocab_size < 1 or n_positions < 1:
        raise UserError(f"resize_for_prior needs vocab_size and n_positions >= 1, got {vocab_size}, {n_positions}")
    new_config = copy.deepcopy(config)
    new_config.vocab_size, new_config.n_positions = vocab_size, n_positions
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(new_config, key, None)
        if isinstance(value, int) and value >= vocab_size:
            setattr(new_config, key, None)
    std = config.initializer_range
    old_wpe = jnp.asarray(params["wpe"]["embedding"], jnp.float32)           # (P_old, C)
    width = old_wpe.shape[1]
    k_wte, k_wpe = jax.random.split(rng)
    wte = std * jax.random.normal(k_wte, (vocab_size, width), jnp.float32)  # (V_new, C)
    keep = min(old_wpe.shape[0], n_positions)
    wpe = std * jax.random.normal(k_wpe, (n_positions, width), jnp.float32)
    wpe = wpe.at[:keep].set(old_wpe[:keep])                                  # (P_new, C)
    new_params = {**params, "wte": {"embedding": wte}, "wpe": {"embedding": wpe}}
    return new_config, new_params
