"""The PatchGAN discriminator: parameter counts by hand, shapes, batch independence, its config builder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_base_config
from tests.jit import init as init_fast, run
from vqgan_jax.errors import UserError
from vqgan_jax.models.patchgan import PatchDiscriminator, from_config


def n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("norm, count", [
    # conv_0 4*4*3*8+8; conv_1..3 4*4*c_in*c_out without bias + GroupNorm 2*c_out; conv_out 4*4*64+1.
    ("group", 392 + (2048 + 32) + (8192 + 64) + (32768 + 128) + 1025),
    ("none", 392 + (2048 + 16) + (8192 + 32) + (32768 + 64) + 1025),
])
def test_discriminator_param_count_and_shape(norm, count):
    d = PatchDiscriminator(ndf=8, n_layers=3, norm=norm)
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    v = init_fast(d, jax.random.key(0), x)
    assert set(v) == {"params"} and n_params(v) == count
    logits = run(d, v, x)
    assert logits.shape == (2, 2, 2, 1) and logits.dtype == jnp.float32  # 32 -> 16 -> 8 -> 4 -> 3 -> 2
    shape = jax.eval_shape(lambda v, x: d.apply(v, x), v, jnp.zeros((1, 64, 64, 3))).shape
    assert shape == (1, 6, 6, 1)
    # One image's logits do not depend on the rest of the batch (no batch statistics).
    np.testing.assert_allclose(run(d, v, x[:1]), logits[:1], atol=1e-5)
    low = run(PatchDiscriminator(ndf=8, n_layers=3, norm=norm, dtype=jnp.bfloat16), v, x)
    assert low.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(low)))


def test_discriminator_config_and_errors():
    cfg = get_base_config()
    cfg.model.dtype = "bfloat16"
    d = from_config(cfg)
    assert (d.ndf, d.n_layers, d.norm, d.dtype) == (64, 3, "group", jnp.bfloat16)
    cfg.disc.norm = "batch"
    with pytest.raises(UserError, match="disc.norm"):
        from_config(cfg)
    with pytest.raises(UserError, match="norm"):
        jax.eval_shape(PatchDiscriminator(norm="batch").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
