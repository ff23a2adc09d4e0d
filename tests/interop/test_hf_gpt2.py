"""Hugging Face GPT-2 interop: config.json + safetensors folders in and out, state-dict names, bad folders,
resizing a pretrained GPT-2 into a prior."""
import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util
from transformers import GPT2Config

from vqgan_jax.errors import UserError
from vqgan_jax.interop import hf_gpt2
from vqgan_jax.models.gpt2 import GPT2LMHeadModel

FIXTURE = Path(__file__).parent.parent / "fixtures" / "gpt2_tiny"


@pytest.fixture(scope="module")
def tiny():
    """(config, params, reference npz) of the PyTorch-made tiny GPT-2 (2 layers, 2 heads, 32 wide, V=67)."""
    config, params = hf_gpt2.from_pretrained(FIXTURE)
    return config, params, dict(np.load(FIXTURE / "reference.npz"))


def _leaves(params):
    return traverse_util.flatten_dict(params)


def test_save_then_load_round_trip(tiny, tmp_path):
    config, params, _ = tiny
    hf_gpt2.save_pretrained(tmp_path / "out", config, params)
    config2, params2 = hf_gpt2.from_pretrained(tmp_path / "out")
    a, b = _leaves(params), _leaves(params2)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(np.asarray(a[path]), np.asarray(b[path]), err_msg=str(path))
    assert config2.to_dict()["n_embd"] == 32 and config2.vocab_size == 67 and config2.n_positions == 24

def test_bare_gpt2model_names_and_buffers_load(tiny):
    config, params, _ = tiny
    state = {k[len("transformer."):]: v for k, v in hf_gpt2.params_to_hf_state_dict(params).items()}
    state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), np.float32))   # old transformers' mask buffer
    state["lm_head.weight"] = state["wte.weight"]
    loaded = hf_gpt2.params_from_hf_state_dict(state, config)
    np.testing.assert_array_equal(loaded["h_1"]["mlp"]["c_proj"]["kernel"], params["h_1"]["mlp"]["c_proj"]["kernel"])

def _copy_fixture(tmp_path):
    out = tmp_path / "gpt2"
    shutil.copytree(FIXTURE, out)
    return out

@pytest.mark.parametrize("breakage, message", [
    ("bert", "'bert' model, not GPT-2"),
    ("no_config", "no config.json"),
    ("no_weights", "no model.safetensors"),
    ("missing_tensor", "missing ['h.1.mlp.c_fc.bias']"),
    ("wrong_shape", "h.0.ln_1.weight has shape (31,)"),
    ("untied_head", "untied heads are not supported"),
    ("garbage_weights", "not a readable safetensors file"),
])
def test_bad_folders_raise_user_error(tmp_path, breakage, message):
    folder = _copy_fixture(tmp_path)
    weights = folder / "model.safetensors"
    state = dict(safetensors.numpy.load_file(weights))
    if breakage == "bert":
        raw = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**raw, "model_type": "bert"}))
    elif breakage == "no_config":
        (folder / "config.json").unlink()
    elif breakage == "no_weights":
        weights.unlink()
    elif breakage == "garbage_weights":
        weights.write_bytes(b"not safetensors")
    else:
        if breakage == "missing_tensor":
            del state["transformer.h.1.mlp.c_fc.bias"]
        elif breakage == "wrong_shape":
            state["transformer.h.0.ln_1.weight"] = np.ones(31, np.float32)
        else:
            state["lm_head.weight"] = state["transformer.wte.weight"] + 1
        safetensors.numpy.save_file(state, weights, metadata={"format": "pt"})
    with pytest.raises(UserError, match=None) as err:
        hf_gpt2.from_pretrained(folder)
    assert message in str(err.value) and "\n" not in str(err.value)

def test_unsupported_config_is_refused():
    with pytest.raises(UserError, match="activation_function 'relu'"):
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, activation_function="relu"))

def test_resize_for_prior(tiny):
    config, params, _ = tiny
    new_config, new_params = hf_gpt2.resize_for_prior(config, params, vocab_size=2000, n_positions=40,
                                                      rng=jax.random.key(3))
    assert (new_config.vocab_size, new_config.n_positions) == (2000, 40)
    assert (config.vocab_size, config.n_positions) == (67, 24)                 # input config untouched
    wte, wpe = np.asarray(new_params["wte"]["embedding"]), np.asarray(new_params["wpe"]["embedding"])
    assert wte.shape == (2000, 32) and wpe.shape == (40, 32)
    np.testing.assert_array_equal(wpe[:24], params["wpe"]["embedding"])       # pretrained rows kept
    assert abs(wte.std() / 0.02 - 1) < 0.03 and abs(wpe[24:].std() / 0.02 - 1) < 0.2
    for name in ("h_0", "h_1", "ln_f"):
        assert new_params[name] is params[name]
    logits = jax.eval_shape(GPT2LMHeadModel(new_config).apply, {"params": new_params}, jnp.zeros((1, 40), jnp.int32))
    assert logits.shape == (1, 40, 2000)
    shrunk_config, shrunk = hf_gpt2.resize_for_prior(config, params, vocab_size=10, n_positions=8,
                                                     rng=jax.random.key(3))
    np.testing.assert_array_equal(shrunk["wpe"]["embedding"], params["wpe"]["embedding"][:8])

def test_saved_folder_loads_in_pytorch_transformers_with_same_logits(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import GPT2LMHeadModel as TorchGPT2

    config = GPT2Config(vocab_size=53, n_positions=16, n_embd=24, n_layer=2, n_head=3)
    model = GPT2LMHeadModel(config)
    params = model.init(jax.random.key(5), jnp.zeros((1, 16), jnp.int32))["params"]
    # Perturb every tensor so that zero biases / unit scales cannot hide a mapping mistake.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(6), len(leaves))
    params = jax.tree.unflatten(treedef, [x + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    hf_gpt2.save_pretrained(tmp_path, config, params)

    torch_model, info = TorchGPT2.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info                                      # nothing missing or unexpected
    ids = np.asarray(jax.random.randint(jax.random.key(7), (2, 16), 0, 53))
    with torch.no_grad():
        theirs = torch_model.eval()(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
