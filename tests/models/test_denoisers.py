"""The diffusion denoisers (U-Net, DiT) and their conditioning: shapes, zero-initialised outputs, the class
and timestep actually reaching the output, the sinusoidal embedding by hand, config errors."""
import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import demo
from tests import jit
from vqgan_jax.errors import UserError
from vqgan_jax.models import denoisers
from vqgan_jax.nn.embeddings import timestep_embedding


def cfg(model):
    c = ml_collections.ConfigDict(demo.get_config("tiny").diffusion.to_dict())
    c.model = model
    return c


def test_timestep_embedding_by_hand():
    embed = jax.jit(timestep_embedding, static_argnums=1, static_argnames="max_period")  # eager: each op compiles
    e = np.asarray(embed(jnp.array([0, 3]), 4, max_period=100.0))
    # frequencies 100^(-0/2) = 1 and 100^(-1/2) = 0.1: [cos(t), cos(0.1 t), sin(t), sin(0.1 t)]
    np.testing.assert_allclose(e[0], [1, 1, 0, 0], atol=1e-7)
    np.testing.assert_allclose(e[1], [math.cos(3), math.cos(0.3), math.sin(3), math.sin(0.3)], rtol=1e-6)
    assert embed(jnp.array([1]), 5).shape == (1, 5)


@pytest.fixture(scope="module", params=["unet", "dit"])
def built(request):
    """(name, model, params, x, t, y, forward): forward(params, x, t, y) compiled once for both tests."""
    model = denoisers.from_config(cfg(request.param), channels=8, num_classes=3)
    x = jit.normal(0, (2, 8, 8, 8))
    t, y = np.array([10, 900], np.int32), np.array([0, 2], np.int32)  # numpy: t + 100 etc. compile nothing
    params = jit.init(model, jax.random.PRNGKey(1), x, t, y)["params"]
    forward = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y))
    return request.param, model, params, x, t, y, forward


def test_output_shape_and_zero_init(built):
    _, model, params, x, t, y, forward = built
    out = forward(params, x, t, y)
    assert out.shape == x.shape and out.dtype == jnp.float32
    np.testing.assert_array_equal(out, 0.0)   # zero-initialised output layer: training starts from 0


def _perturbed(params, seed):
    """Every parameter moved by a little noise (numpy: XLA:CPU compiles random draws slowly), so the
    zero-initialised layers pass a signal."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(np.float32), params)


def test_time_and_class_reach_the_output(built):
    name, model, params, x, t, y, forward = built
    p = _perturbed(params, 2)
    f = functools.partial(forward, p)
    base = f(x, t, y)
    assert np.abs(base).max() > 1e-4
    assert np.abs(f(x, t + 100, y) - base).max() > 1e-4
    assert np.abs(f(x, t, (y + 1) % 3) - base).max() > 1e-4
    # None is the null class (label 3)
    np.testing.assert_allclose(jax.jit(lambda p, x, t: model.apply({"params": p}, x, t, None))(p, x, t),
                               f(x, t, jnp.array([3, 3])), atol=1e-6)


def test_unconditional_denoiser_has_no_class_table():
    model = denoisers.from_config(cfg("unet"), channels=4, num_classes=0)
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, 8, 8, 4)), jnp.zeros((1,), jnp.int32), None),
                            jax.random.PRNGKey(0))
    assert "label_embed" not in shapes["params"]["cond"]


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="diffusion.model"):
        denoisers.from_config(cfg("mlp"), channels=4, num_classes=0)
    c = cfg("dit")
    c.dit_heads = 3
    with pytest.raises(UserError, match="dit_heads"):
        denoisers.from_config(c, channels=4, num_classes=0)
    m = denoisers.from_config(cfg("dit"), channels=4, num_classes=0)
    with pytest.raises(UserError, match="dit_patch"):
        jax.eval_shape(lambda r: m.init(r, jnp.zeros((1, 7, 7, 4)), jnp.zeros((1,), jnp.int32)), jax.random.PRNGKey(0))


def test_bfloat16_compute_stays_close_to_float32():
    """diffusion.dtype=bfloat16: same parameters (float32), bf16 activations, float32 output near the f32 one."""
    c32, c16 = cfg("unet"), cfg("unet")
    c16.dtype = "bfloat16"
    m32 = denoisers.from_config(c32, channels=4, num_classes=0)
    m16 = denoisers.from_config(c16, channels=4, num_classes=0)
    x, t = jit.normal(0, (2, 8, 8, 4)), jnp.array([5, 500])
    p = _perturbed(jit.init(m32, jax.random.PRNGKey(1), x, t)["params"], 3)
    y32 = jax.jit(lambda p, x, t: m32.apply({"params": p}, x, t))(p, x, t)
    y16 = jax.jit(lambda p, x, t: m16.apply({"params": p}, x, t))(p, x, t)
    assert y16.dtype == jnp.float32
    y16, y32 = np.asarray(y16), np.asarray(y32)  # numpy: eager jnp ops would each compile
    err = float(np.abs(y16 - y32).max() / np.abs(y32).max())
    assert 0 < err < 0.05
