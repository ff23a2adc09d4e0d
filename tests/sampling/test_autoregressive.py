"""The sampler, driven by fake logits functions with hand-computed answers, and by the tiny GPT-2."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.interop import hf_gpt2 as gpt2_hf
from vqgan_jax.errors import UserError
from vqgan_jax.models.gpt2 import GPT2LMHeadModel
from vqgan_jax.sampling.autoregressive import filter_logits, guided_logits, make_gpt2_sampler, sample, sample_no_cache

V = 10
NO_CACHE = jnp.zeros((), jnp.int32)  # the fake models keep no state


def chain_logits(tokens, cache):
    """After token x the favourite is (3x + 1) % 10 (logit 5), the runner-up (x + 2) % 10 (logit 4)."""
    last = tokens[:, 0]
    logits = 5.0 * jax.nn.one_hot((3 * last + 1) % V, V) + 4.0 * jax.nn.one_hot((last + 2) % V, V)
    return logits, cache


# Greedy chains by hand: 2 -> 7 -> 22 % 10 = 2 ...; 5 -> 16 % 10 = 6 -> 19 -> 9 -> 28 -> 8 -> 25 -> 5 -> 6.
GREEDY = np.array([[2, 7, 2, 7, 2, 7, 2], [5, 6, 9, 8, 5, 6, 9]], np.int32)
PROMPT = jnp.array([[2], [5]], jnp.int32)


def test_top_k_1_is_greedy():
    out = sample(chain_logits, NO_CACHE, PROMPT, jax.random.key(0), num_steps=6, top_k=1)
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, GREEDY)
    # Plain sampling from the same logits often takes the runner-up (probability 1/(1 + e) = 0.27).
    free = sample(chain_logits, NO_CACHE, jnp.full((64, 1), 2, jnp.int32), jax.random.key(0), num_steps=6)
    assert (np.asarray(free)[:, 1] == 4).mean() > 0.1


@pytest.mark.parametrize("settings", [dict(temperature=0.0), dict(temperature=0.0, top_p=0.5),
                                      dict(temperature=0.0, top_k=3)])
def test_temperature_zero_is_greedy(settings):
    out = sample(chain_logits, NO_CACHE, PROMPT, jax.random.key(1), num_steps=6, **settings)
    np.testing.assert_array_equal(out, GREEDY)


def test_prompt_is_kept_and_continued():
    # 0 and 4 are not what greedy decoding would put after 2 and 0: the prompt is fed, not replaced.
    prompt = jnp.array([[2, 0, 4], [5, 5, 5]], jnp.int32)
    out = np.asarray(sample(chain_logits, NO_CACHE, prompt, jax.random.key(0), num_steps=3, top_k=1))
    np.testing.assert_array_equal(out, [[2, 0, 4, 3, 0, 1], [5, 5, 5, 6, 9, 8]])
    np.testing.assert_array_equal(sample(chain_logits, NO_CACHE, prompt, jax.random.key(0), num_steps=0), prompt)


def test_top_p_and_top_k_masks_on_a_hand_table():
    probs = np.array([0.1, 0.5, 0.06, 0.3, 0.04])     # by rank: 1 (.5), 3 (.3), 0 (.1), 2 (.06), 4 (.04)
    logits = jnp.log(jnp.array([probs, probs[::-1]]))  # row 2 reversed: checks the un-sorting per row
    # Jitted (top_p traced), as the sampler runs it: op by op this test spent seconds dispatching.
    filt = jax.jit(filter_logits, static_argnames=("top_k",))

    def kept(**kw):
        mask = np.isfinite(np.asarray(filt(logits, **kw)))
        first, second = set(np.flatnonzero(mask[0])), set(np.flatnonzero(mask[1]))
        assert second == {4 - i for i in first}
        return first

    # Mass held by the tokens above each rank: 0, .5, .8, .9, .96; a token stays while that is < top_p.
    assert kept(top_p=0.45) == {1}
    assert kept(top_p=0.7) == {1, 3}
    assert kept(top_p=0.85) == {1, 3, 0}
    assert kept(top_p=0.93) == {1, 3, 0, 2}
    assert kept(top_p=1e-6) == {1}                    # the top token always stays
    assert kept(top_p=1.0) == kept() == {0, 1, 2, 3, 4}
    assert kept(top_k=2) == {1, 3}
    # top-k 3 first, then top-p on the renormalised .556, .333, .111: masses above 0, .556, .889.
    assert kept(top_k=3, top_p=0.6) == {1, 3}
    assert kept(top_k=3, top_p=0.95) == {1, 3, 0}
    np.testing.assert_array_equal(filt(logits, top_k=2)[0, [1, 3]], logits[0, [1, 3]])
    # At the boundary (powers of two: exact in float32) the two tokens above already hold 0.75 >= top_p.
    exact = np.isfinite(np.asarray(filt(jnp.log(jnp.array([[0.5, 0.25, 0.125, 0.125]])), top_p=0.75)))
    np.testing.assert_array_equal(exact, [[True, True, False, False]])


def test_temperature_and_top_p_change_the_drawn_frequencies():
    two = lambda tokens, cache: (jnp.broadcast_to(jnp.log(jnp.array([1.0, 3.0])), (tokens.shape[0], 2)), cache)
    prompt = jnp.zeros((4000, 1), jnp.int32)
    share = lambda **kw: float(np.asarray(sample(two, NO_CACHE, prompt, jax.random.key(2), num_steps=1, **kw))[:, 1].mean())
    assert abs(share() - 0.75) < 0.03                                   # p = 3 / 4; 3 sigma = 0.02
    assert abs(share(temperature=2.0) - 3 ** 0.5 / (1 + 3 ** 0.5)) < 0.03  # p ~ sqrt(3) / (1 + sqrt(3))
    assert share(top_p=0.7) == 1.0                                      # 0.75 >= 0.7: the nucleus is one token


def test_guided_logits_arithmetic():
    cond = jnp.array([[1.0, 0.0, 3.0], [2.0, 2.0, 2.0]])
    uncond = jnp.array([[0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(guided_logits(jnp.concatenate([cond, uncond]), 2.0),
                                  [[2.0, -2.0, 5.0], [3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(guided_logits(jnp.concatenate([cond, uncond]), 1.0), cond)


COND = jnp.array([0.0, 2.0, 3.0, 0.0, 0.0, 0.0])
UNCOND = jnp.array([0.0, 2.0, 0.0, 2.5, 0.0, 0.0])


def cfg_fake(tokens, position):
    """Conditional rows get COND, unconditional rows UNCOND. From position 1 on (after the class token)
    both halves must be fed the same tokens; if not, every row's favourite becomes the sentinel 0."""
    half = tokens.shape[0] // 2
    logits = jnp.concatenate([jnp.broadcast_to(COND, (half, 6)), jnp.broadcast_to(UNCOND, (half, 6))])
    differ = (position >= 1) & jnp.any(tokens[:half] != tokens[half:])
    return jnp.where(differ, 100.0 * jax.nn.one_hot(0, 6), logits), position + 1


# guided = uncond + s (cond - uncond) = [0, 2, 3s, 2.5 - 2.5s, 0, 0]: argmax by hand for each s.
@pytest.mark.parametrize("scale, token", [(0.0, 3), (0.5, 1), (1.0, 2), (2.0, 2), (-0.5, 3)])
def test_classifier_free_guidance(scale, token):
    prompt = jnp.array([[4, 1], [5, 1], [5, 1], [5, 1]], jnp.int32)   # classes 4, 5; null class 5
    out = sample(cfg_fake, jnp.zeros((), jnp.int32), prompt, jax.random.key(0), num_steps=3,
                 temperature=0.0, cfg_scale=scale)
    np.testing.assert_array_equal(out, [[4, 1, token, token, token], [5, 1, token, token, token]])


def test_same_key_same_tokens_other_key_other_tokens():
    flat = lambda tokens, cache: (jnp.zeros((tokens.shape[0], 50)), cache)
    prompt = jnp.zeros((4, 1), jnp.int32)
    draw = lambda seed: np.asarray(sample(flat, NO_CACHE, prompt, jax.random.key(seed), num_steps=16, top_k=20))
    a, b, c = draw(7), draw(7), draw(8)
    np.testing.assert_array_equal(a, b)
    assert (a != c).mean() > 0.5
    assert a[:, 1:].max() < 50 and len(np.unique(a[:, 1:])) > 10


TRACES = []


def counting_logits(tokens, cache):
    TRACES.append(tokens.shape)  # Python side effect: runs only while jax traces
    return chain_logits(tokens, cache)


def test_no_retrace_on_a_second_call():
    kw = dict(num_steps=5, top_k=4)
    sample(counting_logits, NO_CACHE, PROMPT, jax.random.key(0), temperature=1.0, top_p=0.9, **kw)
    sample(counting_logits, NO_CACHE, PROMPT + 1, jax.random.key(1), temperature=0.5, top_p=0.8, **kw)
    sample(counting_logits, NO_CACHE, PROMPT, jax.random.key(2), temperature=0.0, top_p=0.7, **kw)
    assert TRACES == [(2, 1)]                       # one trace for the whole loop and all three calls
    sample(counting_logits, NO_CACHE, PROMPT, jax.random.key(0), num_steps=6, top_k=4)
    assert len(TRACES) == 2                         # a new num_steps (a new buffer size) does trace again


@pytest.mark.parametrize("bad, message", [(dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"),
                                          (dict(temperature=-1.0), "temperature"), (dict(top_k=-1), "top_k")])
def test_bad_settings_raise_user_error(bad, message):
    with pytest.raises(UserError, match=message):
        sample(chain_logits, NO_CACHE, PROMPT, jax.random.key(0), num_steps=2, **bad)


@pytest.fixture(scope="module")
def tiny_gpt2_sampler():
    config, params = gpt2_hf.from_pretrained(Path(__file__).parent.parent / "fixtures" / "gpt2_tiny")
    return make_gpt2_sampler(GPT2LMHeadModel(config), params, batch_size=2, max_len=24)


@pytest.mark.parametrize("settings", [dict(top_k=1), dict(temperature=1.0)])
def test_gpt2_cached_sampling_equals_no_cache_sampling(tiny_gpt2_sampler, settings):
    fns = tiny_gpt2_sampler
    prompt = jnp.array([[3], [60]], jnp.int32)
    cached = sample(fns.tokens_to_logits, fns.init_cache, prompt, jax.random.key(4), num_steps=23, **settings)
    full = sample_no_cache(fns.sequence_to_logits, fns.params, prompt, jax.random.key(4), num_steps=23, **settings)
    assert cached.shape == (2, 24)
    np.testing.assert_array_equal(cached, full)
    assert len(np.unique(np.asarray(cached))) > 4   # a real sequence, not one repeated token


def test_gpt2_sampler_refuses_more_positions_than_the_model_has(tiny_gpt2_sampler):
    config, params = gpt2_hf.from_pretrained(Path(__file__).parent.parent / "fixtures" / "gpt2_tiny")
    with pytest.raises(UserError, match="n_positions >= 25"):
        make_gpt2_sampler(GPT2LMHeadModel(config), params, batch_size=2, max_len=25)


def test_chunks_cover_the_loop():
    from vqgan_jax.sampling.autoregressive import _chunks
    assert _chunks(256, 32) == tuple((a, a + 32) for a in range(0, 256, 32))
    assert _chunks(23, 5) == ((0, 5), (5, 10), (10, 15), (15, 20), (20, 23))
    assert _chunks(23, 0) == ((0, 23),) and _chunks(23, 40) == ((0, 23),) and _chunks(0, 8) == ()
    with pytest.raises(UserError, match="chunk_len"):
        sample(chain_logits, NO_CACHE, PROMPT, jax.random.key(0), num_steps=2, chunk_len=-1)


# chunk_len 1 writes one position per chunk (an unrolled chunk per step: 6 steps keep its compile short)
@pytest.mark.parametrize("chunk_len,num_steps", [(1, 6), (5, 22), (0, 22)])
def test_gpt2_chunked_cache_sampling_draws_the_same_tokens(tiny_gpt2_sampler, chunk_len, num_steps):
    fns = tiny_gpt2_sampler
    prompt = jnp.array([[3, 9], [60, 1]], jnp.int32)
    kw = dict(num_steps=num_steps, temperature=1.0, top_k=20)
    chunked = sample(fns.tokens_to_logits, fns.init_cache, prompt, jax.random.key(5), chunk_len=chunk_len, **kw)
    full = sample_no_cache(fns.sequence_to_logits, fns.params, prompt, jax.random.key(5), **kw)
    np.testing.assert_array_equal(chunked, full)
    np.testing.assert_array_equal(np.asarray(chunked)[:, :2], prompt)
