"""GPT-2 model and Hugging Face interop: parity with PyTorch transformers, causality, KV-cache decoding,
initialisation, dropout, checkpoint folders and resizing for a prior."""
import json
import math
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util
from transformers import GPT2Config

from vqgan_jax import gpt2_hf
from vqgan_jax.errors import UserError
from vqgan_jax.gpt2 import GPT2LMHead, GPT2LMHeadModel, init_cache

FIXTURE = Path(__file__).parent / "fixtures" / "gpt2_tiny"


@pytest.fixture(scope="module")
def tiny():
    """(config, params, reference npz) of the PyTorch-made tiny GPT-2 (2 layers, 2 heads, 32 wide, V=67)."""
    config, params = gpt2_hf.from_pretrained(FIXTURE)
    return config, params, dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def forward(tiny):
    config, params, _ = tiny
    model = GPT2LMHeadModel(config)
    return jax.jit(lambda ids: model.apply({"params": params}, ids))


def _leaves(params):
    return traverse_util.flatten_dict(params)


def test_logits_match_pytorch_transformers(tiny, forward):
    _, _, ref = tiny
    logits = np.asarray(forward(jnp.asarray(ref["input_ids"])))
    assert logits.dtype == np.float32 and logits.shape == ref["logits"].shape
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-5, rtol=0)


def test_parameter_names_and_count_are_hf_gpt2s(tiny):
    config, params, ref = tiny
    assert set(params) == {"wte", "wpe", "h_0", "h_1", "ln_f"}
    assert set(params["h_1"]) == {"ln_1", "attn", "ln_2", "mlp"}
    assert set(params["h_1"]["attn"]) == {"c_attn", "c_proj"} and set(params["h_1"]["mlp"]) == {"c_fc", "c_proj"}
    v, p, c, n = config.vocab_size, config.n_positions, config.n_embd, config.n_layer
    formula = v * c + p * c + n * (12 * c * c + 13 * c) + 2 * c
    count = sum(x.size for x in _leaves(params).values())
    assert count == formula == int(ref["num_params"]) == 28384


def test_causal(tiny, forward):
    config, _, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    t = 9
    changed = ids.at[:, t + 1:].set((ids[:, t + 1:] + 7) % config.vocab_size)
    a, b = np.asarray(forward(ids)), np.asarray(forward(changed))
    np.testing.assert_array_equal(a[:, : t + 1], b[:, : t + 1])
    assert np.abs(a[:, t + 1:] - b[:, t + 1:]).min(axis=-1).max() > 0  # later positions do see the change


def test_cached_decoding_equals_full_forward(tiny, forward):
    config, params, ref = tiny
    model = GPT2LMHeadModel(config)
    ids = jnp.asarray(ref["input_ids"])                                       # (2, 24)
    full = np.asarray(forward(ids))
    traces = []

    @jax.jit
    def step(cache, tokens):
        traces.append(tokens.shape)  # runs only when jax traces
        logits, mutated = model.apply({"params": params, "cache": cache}, tokens, decode=True, mutable=["cache"])
        return logits, mutated["cache"]

    cache = init_cache(model, ids.shape[0], ids.shape[1])
    assert cache["h_0"]["attn"]["cached_key"].shape == (2, 2, 24, 16)  # (B, H, max_len, D)
    for t in range(ids.shape[1]):
        logits, cache = step(cache, ids[:, t:t + 1])
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, t], atol=1e-5, rtol=0)
    assert traces == [(2, 1)] and int(cache["cache_index"]) == 24

    # A 5-token prefix written at once, then one token at a time.
    cache = init_cache(model, ids.shape[0], ids.shape[1])
    logits, cache = step(cache, ids[:, :5])
    np.testing.assert_allclose(np.asarray(logits), full[:, :5], atol=1e-5, rtol=0)
    for t in range(5, 8):
        logits, cache = step(cache, ids[:, t:t + 1])
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, t], atol=1e-5, rtol=0)


def test_init_follows_gpt2():
    n_layer, width = 2, 128
    model = GPT2LMHead(vocab_size=300, n_positions=64, n_embd=width, n_layer=n_layer, n_head=4)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))["params"]
    proj_std = 0.02 / math.sqrt(2 * n_layer)
    for path, x in _leaves(params).items():
        x = np.asarray(x)
        if path[-1] == "bias":
            np.testing.assert_array_equal(x, 0)
        elif path[-1] == "scale":
            np.testing.assert_array_equal(x, 1)
        else:  # kernels and embeddings: N(0, std), c_proj (attn and mlp) scaled down
            want = proj_std if path[-2] == "c_proj" else 0.02
            assert abs(x.std() / want - 1) < 0.03, (path, x.std(), want)
            assert abs(x.mean()) < 4 * want / math.sqrt(x.size), path
    assert params["h_0"]["mlp"]["c_fc"]["kernel"].shape == (width, 4 * width)


def test_dropout_only_when_training(tiny):
    config, params, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    plain = GPT2LMHeadModel(config).clone(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    base = np.asarray(plain.apply({"params": params}, ids))
    every = plain.clone(embd_pdrop=0.3, resid_pdrop=0.3, attn_pdrop=0.3)
    np.testing.assert_array_equal(every.apply({"params": params}, ids), base)  # eval: no dropout
    # Eager (not jitted): the random-bits kernels compile once for all three models.
    for pdrop in ({"embd_pdrop": 0.3}, {"resid_pdrop": 0.3}, {"attn_pdrop": 0.3}):
        model = plain.clone(**pdrop)
        run = lambda seed: model.apply({"params": params}, ids, train=True, rngs={"dropout": jax.random.key(seed)})
        a, b, c = run(0), run(0), run(1)
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - base).max() > 1e-3 and np.abs(a - c).max() > 1e-3, pdrop
    # Training with attention dropout takes an explicit-softmax path; at a negligible rate it must
    # give the eval logits.
    barely = plain.clone(attn_pdrop=1e-9).apply({"params": params}, ids, train=True, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(barely, base, atol=1e-5, rtol=0)


def test_bfloat16_compute_gives_float32_logits(tiny):
    config, params, ref = tiny
    model = GPT2LMHeadModel(config, dtype=jnp.bfloat16)
    logits = jax.jit(model.apply)({"params": params}, jnp.asarray(ref["input_ids"]))
    assert logits.dtype == jnp.float32
    assert np.abs(np.asarray(logits) - ref["logits"]).max() < 0.15


# ---- Hugging Face folders -----------------------------------------------------------------------


def test_save_then_load_round_trip(tiny, tmp_path):
    config, params, _ = tiny
    gpt2_hf.save_pretrained(tmp_path / "out", config, params)
    config2, params2 = gpt2_hf.from_pretrained(tmp_path / "out")
    a, b = _leaves(params), _leaves(params2)
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_array_equal(np.asarray(a[path]), np.asarray(b[path]), err_msg=str(path))
    assert config2.to_dict()["n_embd"] == 32 and config2.vocab_size == 67 and config2.n_positions == 24


def test_bare_gpt2model_names_and_buffers_load(tiny):
    config, params, _ = tiny
    state = {k[len("transformer."):]: v for k, v in gpt2_hf.params_to_hf_state_dict(params).items()}
    state["h.0.attn.bias"] = np.tril(np.ones((1, 1, 24, 24), np.float32))   # old transformers' mask buffer
    state["lm_head.weight"] = state["wte.weight"]
    loaded = gpt2_hf.params_from_hf_state_dict(state, config)
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
        gpt2_hf.from_pretrained(folder)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unsupported_config_is_refused():
    with pytest.raises(UserError, match="activation_function 'relu'"):
        GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, activation_function="relu"))


def test_resize_for_prior(tiny):
    config, params, _ = tiny
    new_config, new_params = gpt2_hf.resize_for_prior(config, params, vocab_size=2000, n_positions=40,
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
    shrunk_config, shrunk = gpt2_hf.resize_for_prior(config, params, vocab_size=10, n_positions=8,
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
    gpt2_hf.save_pretrained(tmp_path, config, params)

    torch_model, info = TorchGPT2.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info                                      # nothing missing or unexpected
    ids = np.asarray(jax.random.randint(jax.random.key(7), (2, 16), 0, 53))
    with torch.no_grad():
        theirs = torch_model.eval()(torch.from_numpy(ids.astype(np.int64))).logits.numpy()
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(ids)))
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def _softmax_attention(q, k, v):
    """Plain causal softmax attention in float64 numpy: q, k, v (B, T, H, D) -> (B, T, H, D)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.shape[-1])
    s = np.where(np.tril(np.ones((q.shape[1], k.shape[1]), bool)), s, -np.inf)
    w = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhts,bshd->bthd", w / w.sum(-1, keepdims=True), v)


@pytest.mark.parametrize("t, block", [(150, 64), (64, 64), (7, 64), (40, 16)])
def test_blocked_attention_equals_softmax_attention_and_its_gradient(t, block):
    from vqgan_jax.gpt2 import _attend_blocked
    rng = np.random.default_rng(t)
    q, k, v, g = (jnp.asarray(2 * rng.standard_normal((2, t, 3, 8)), jnp.float32) for _ in range(4))
    # Jitted: op by op, the blocked gradient dispatches (and compiles) hundreds of small programs.
    ours = lambda q, k, v: _attend_blocked(q, k, v, dropout=None, block=block)  # noqa: E731
    out = jax.jit(ours)(q, k, v)
    np.testing.assert_allclose(np.asarray(out), _softmax_attention(q, k, v), atol=1e-5, rtol=1e-5)
    # Gradients against XLA's reference attention (explicitly the 'xla' implementation).
    ref = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")  # noqa: E731
    grads = [jax.jit(lambda q, k, v, g, f=f: jax.vjp(f, q, k, v)[1](g))(q, k, v, g) for f in (ref, ours)]
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=5e-5, rtol=1e-5)


def test_blocked_attention_dropout_drops_weights():
    from flax import linen as nn
    from vqgan_jax.gpt2 import _attend_blocked
    # All-equal scores (q = 0): row 3's weights are 1/4 on keys 0..3. With v = one-hot key ids, output
    # row 3 lists those weights, each dropped (0) or kept and rescaled by 1 / (1 - 0.5): 0.5.
    k = jnp.asarray(np.random.default_rng(0).standard_normal((16, 100, 2, 4)), jnp.float32)
    q = jnp.zeros_like(k)
    v = jnp.broadcast_to(jnp.eye(100, 4, dtype=jnp.float32)[None, :, None, :], (16, 100, 2, 4))
    out = nn.Dropout(0.5).apply({}, q, rngs={"dropout": jax.random.key(1)},
                                method=lambda m, x: _attend_blocked(x, k, v, dropout=m, block=32))
    row = np.asarray(out)[:, 3]                                  # (16, 2, 4)
    assert set(np.round(row.ravel(), 6)) == {0.0, 0.5}
    assert 0.3 < (row == 0).mean() < 0.7
    plain = _attend_blocked(q, k, v, dropout=None, block=32)
    np.testing.assert_allclose(np.asarray(plain)[:, 3], 0.25, atol=1e-7)


def test_blocked_and_xla_attention_give_the_same_logits(tiny):
    config, params, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    blocked = GPT2LMHeadModel(config, attention_impl="blocked").apply({"params": params}, ids)
    xla = GPT2LMHeadModel(config, attention_impl="xla").apply({"params": params}, ids)
    np.testing.assert_allclose(np.asarray(blocked), np.asarray(xla), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(blocked), ref["logits"], atol=1e-5, rtol=0)


def test_return_hidden_gives_the_logits_through_the_tied_embedding(tiny, forward):
    config, params, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    hidden = GPT2LMHeadModel(config).apply({"params": params}, ids, return_hidden=True)
    assert hidden.shape == (*ids.shape, config.n_embd)
    np.testing.assert_allclose(np.asarray(hidden @ params["wte"]["embedding"].T), np.asarray(forward(ids)),
                               atol=1e-5, rtol=0)


def test_resize_cache_keeps_written_positions_and_decoding_continues(tiny, forward):
    from vqgan_jax.gpt2 import resize_cache
    config, params, ref = tiny
    model = GPT2LMHeadModel(config)
    ids = jnp.asarray(ref["input_ids"])
    full = np.asarray(forward(ids))
    step = jax.jit(lambda cache, tokens: model.apply({"params": params, "cache": cache}, tokens, decode=True,
                                                     mutable=["cache"]))
    cache = resize_cache(init_cache(model, 2, 24), 6)
    assert cache["h_1"]["attn"]["cached_value"].shape == (2, 2, 6, 16)
    logits, mutated = step(cache, ids[:, :6])
    grown = resize_cache(mutated["cache"], 10)
    kept = grown["h_0"]["attn"]["cached_key"]
    np.testing.assert_array_equal(kept[:, :, :6], mutated["cache"]["h_0"]["attn"]["cached_key"])
    np.testing.assert_array_equal(kept[:, :, 6:], 0)
    assert int(grown["cache_index"]) == 6
    for t in range(6, 10):
        logits, mutated = step(grown, ids[:, t:t + 1])
        grown = mutated["cache"]
        np.testing.assert_allclose(np.asarray(logits[:, 0]), full[:, t], atol=1e-5, rtol=0)
