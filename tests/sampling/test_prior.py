"""Token grids from a trained prior: prompts (class tokens, guidance rows), codes only, seeded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.errors import UserError
from vqgan_jax.sampling import prior as prior_sampling
from vqgan_jax.train import loading


def test_label_dropout_and_class_tokens():
    tok = PriorTokens(num_codes=16, num_classes=3)
    assert tok.vocab_size == 20 and tok.null_token == 16
    np.testing.assert_array_equal(tok.first_token(jnp.array([0, 2])), [17, 19])
    np.testing.assert_array_equal(PriorTokens(16).first_token(jnp.array([0, 2])), [16, 16])
    prompt, cfg = prior_sampling.make_prompt(tok, 2, labels=[1, 2], cfg_scale=3.0)
    np.testing.assert_array_equal(prompt[:, 0], [18, 19, 16, 16])
    assert cfg == 3.0
    prompt, cfg = prior_sampling.make_prompt(tok, 2, labels=[1, 2], cfg_scale=1.0)
    assert prompt.shape == (2, 1) and cfg is None
    with pytest.raises(UserError, match="outside the prior's classes"):
        prior_sampling.make_prompt(tok, 1, labels=[3])
    with pytest.raises(UserError, match="unconditional"):
        prior_sampling.make_prompt(PriorTokens(16), 1, labels=[0])


def test_sampled_grids_use_codes_only_and_repeat_with_the_seed(run_dir):
    prior = loading.load_prior(run_dir)
    model, params, tok, layout = prior.model, prior.variables["params"], prior.tokens, prior.layout
    kw = dict(labels=[1, 2], temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0)
    a = prior_sampling.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3), **kw)
    b = prior_sampling.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3), **kw)
    assert a.shape == (2, 8, 8) and a.max() < tok.num_codes and a.min() >= 0
    np.testing.assert_array_equal(a, b)
    first = prior_sampling.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3),
                                  first_codes=[5, 7], top_k=4)
    np.testing.assert_array_equal(first[:, 0, 0], [5, 7])
