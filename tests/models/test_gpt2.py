"""GPT-2 model and Hugging Face interop: parity with PyTorch transformers, causality, KV-cache decoding,
initialisation, dropout, checkpoint folders and resizing for a prior."""
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from tests import jit
from vqgan_jax import backends
from vqgan_jax.interop import hf_gpt2
from vqgan_jax.models.gpt2 import GPT2LMHead, GPT2LMHeadModel, init_cache

FIXTURE = Path(__file__).parent.parent / "fixtures" / "gpt2_tiny"


@pytest.fixture(scope="module")
def tiny():
    """(config, params, reference npz) of the PyTorch-made tiny GPT-2 (2 layers, 2 heads, 32 wide, V=67)."""
    config, params = hf_gpt2.from_pretrained(FIXTURE)
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
    ids = np.array(ref["input_ids"], np.int32)  # numpy: the edit compiles nothing
    t = 9
    changed = ids.copy()
    changed[:, t + 1:] = (ids[:, t + 1:] + 7) % config.vocab_size
    a, b = np.asarray(forward(jnp.asarray(ids))), np.asarray(forward(jnp.asarray(changed)))
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
    params = jit.init(model, jax.random.key(0), np.zeros((1, 4), np.int32))["params"]
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
        run = lambda seed: np.asarray(model.apply({"params": params}, ids, train=True,
                                                  rngs={"dropout": jax.random.key(seed)}))
        a, b, c = run(0), run(0), run(1)  # numpy: the differences below compile nothing
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


def test_return_hidden_gives_the_logits_through_the_tied_embedding(tiny, forward):
    config, params, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    hidden = GPT2LMHeadModel(config).apply({"params": params}, ids, return_hidden=True)
    assert hidden.shape == (*ids.shape, config.n_embd)
    np.testing.assert_allclose(np.asarray(hidden @ params["wte"]["embedding"].T), np.asarray(forward(ids)),
                               atol=1e-5, rtol=0)


def test_resize_cache_keeps_written_positions_and_decoding_continues(tiny, forward):
    from vqgan_jax.models.gpt2 import resize_cache
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


def test_plain_and_xla_cpu_layers_give_hugging_faces_logits(tiny):
    config, params, ref = tiny
    ids = jnp.asarray(ref["input_ids"])
    cpu = GPT2LMHeadModel(config, **backends.gpt2_layers("xla_cpu")).apply({"params": params}, ids)
    plain = GPT2LMHeadModel(config).apply({"params": params}, ids)
    np.testing.assert_allclose(np.asarray(cpu), np.asarray(plain), atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.asarray(cpu), ref["logits"], atol=1e-5, rtol=0)
