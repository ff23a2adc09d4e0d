"""Every config file and preset loads, is locked, and builds its models (shapes only, no compile)."""
import importlib

import jax
import jax.numpy as jnp
import pytest

from vqgan_jax import models
from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.models import patchgan
from vqgan_jax.models.gpt2 import GPT2LMHeadModel
from vqgan_jax.trainers.ar_prior import make_gpt2_config
from vqgan_jax.trainers.vqgan_step import LossSettings

CONFIGS = ["demo", "flowers64", "flowers256", "cifar100_telephone"]
CASES = [(name, preset) for name in CONFIGS for preset in ("", "tiny")]


def load(name, preset):
    return importlib.import_module(f"configs.{name}").get_config(preset)


@pytest.mark.parametrize("name,preset", CASES)
def test_config_loads_and_builds(name, preset):
    c = load(name, preset)
    assert c.is_locked
    with pytest.raises(AttributeError):
        c.train.num_stepz = 3  # a typo is an error, never a new key
    size = c.data.image_size
    model = models.get(c.model.name).from_config(c)
    x = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0), "vq": jax.random.PRNGKey(1)},
                                                    x, train=False), x)
    (x_hat, aux) = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    f = 2 ** (len(c.model.ch_mult) - 1)
    assert x_hat.shape == (2, size, size, 3)
    assert aux["indices"].shape == (2, size // f, size // f)
    assert variables["params"]["quantize"]["codebook"].shape == (c.quantizer.num_codes, c.quantizer.code_dim)
    disc = patchgan.from_config(c)
    logits = jax.eval_shape(lambda x: disc.apply(disc.init(jax.random.PRNGKey(0), x), x), x)
    assert logits.shape[0] == 2 and logits.shape[-1] == 1
    LossSettings.from_config(c.loss)
    tokens = PriorTokens(num_codes=c.quantizer.num_codes, num_classes=3)
    gcfg = make_gpt2_config(c.prior, tokens, 1 + (size // f) ** 2)
    gpt = GPT2LMHeadModel(gcfg)
    ids = jax.ShapeDtypeStruct((2, gcfg.n_positions), jnp.int32)
    out = jax.eval_shape(lambda i: gpt.apply(gpt.init(jax.random.PRNGKey(0), i), i), ids)
    assert out.shape == (2, gcfg.n_positions, tokens.vocab_size)


def test_flowers64_is_the_benchmark_model():
    c = load("flowers64", "")
    assert (c.model.ch, tuple(c.model.ch_mult), c.model.num_res_blocks, tuple(c.model.attn_resolutions),
            c.model.z_channels) == (64, (1, 2, 2), 1, (16,), 64)
    assert (c.quantizer.num_codes, c.quantizer.code_dim, c.quantizer.beta) == (512, 64, 0.25)
    assert (c.train.batch_size, c.optim.g_lr, c.optim.d_lr, c.optim.b1, c.optim.b2) == (16, 1e-4, 1e-4, 0.5, 0.9)
    assert (c.loss.disc_start, c.loss.disc_weight, c.loss.disc_loss, c.loss.codebook_weight) == (1500, 0.8, "hinge", 1.0)
    assert (c.loss.rec_type, c.loss.perceptual_weight) == ("l1", 1.0)
    assert (c.data.source, c.data.tfds_name, c.data.image_size) == ("tfds", "oxford_flowers102", 64)
    assert (c.prior.n_layer, c.prior.n_head, c.prior.n_embd) == (8, 8, 256)


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown preset"):
        load("flowers64", "huge")
