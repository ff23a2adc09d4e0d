"""The XLA:CPU backend's 16-bit-threshold dropout: rate, scaling, determinism, shapes and sharding invariance."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vqgan_jax.train import parallel
from vqgan_jax.backends.xla_cpu.dropout import Dropout, _bits16, dropout

# Jitted: op by op, every op (and the RNG kernel, per shape) compiles on its own.
_dropout = jax.jit(dropout, static_argnums=1)


def test_rate_half_keeps_about_half_and_scales_by_exactly_two():
    x = jnp.asarray(np.arange(1, 1 + 64 * 1000, dtype=np.float32).reshape(64, 1000))
    y = np.asarray(_dropout(x, 0.5, jax.random.key(0)))
    kept = y != 0
    np.testing.assert_array_equal(y[kept], 2.0 * np.asarray(x)[kept])   # t = 32768: scale 65536 / 32768
    assert abs(kept.mean() - 0.5) < 0.01


def test_rate_is_rounded_to_sixteen_bits_and_the_expectation_is_kept():
    x = jnp.asarray(np.ones((32, 4096), np.float32))
    y = np.asarray(_dropout(x, 0.1, jax.random.key(3)))
    t = round(0.1 * 65536)                                     # 6554: rate 0.100006
    np.testing.assert_allclose(y[y != 0], 65536 / (65536 - t), rtol=1e-7)
    assert abs((y == 0).mean() - t / 65536) < 0.003             # 131072 draws: sd 0.0008
    assert abs(y.mean() - 1.0) < 0.004


def test_trivial_rates_and_deterministic_mode():
    x = jnp.asarray(np.linspace(-1, 1, 60, dtype=np.float32).reshape(3, 4, 5))
    np.testing.assert_array_equal(_dropout(x, 0.0, jax.random.key(0)), x)
    np.testing.assert_array_equal(_dropout(x, 1e-9, jax.random.key(0)), x)   # rounds to rate 0
    np.testing.assert_array_equal(_dropout(x, 1.0, jax.random.key(0)), np.zeros_like(x))
    m = Dropout(0.5)
    np.testing.assert_array_equal(m.apply({}, x, deterministic=True), x)
    y = jax.jit(lambda x, key: m.apply({}, x, deterministic=False, rngs={"dropout": key}))(x, jax.random.key(1))
    assert y.shape == x.shape and y.dtype == x.dtype and (np.asarray(y) == 0).any()


def test_same_key_same_mask_other_key_other_mask_and_odd_shapes():
    for shape in [(7,), (3, 7), (2, 5, 3), ()]:
        x = jnp.asarray(np.ones(shape, np.float32))
        a, b = _dropout(x, 0.5, jax.random.key(5)), _dropout(x, 0.5, jax.random.key(5))
        assert a.shape == shape
        np.testing.assert_array_equal(a, b)
    x = jnp.asarray(np.ones((8, 64), np.float32))
    assert (np.asarray(_dropout(x, 0.5, jax.random.key(5))) != np.asarray(_dropout(x, 0.5, jax.random.key(6)))).any()
    assert _dropout(jnp.asarray(np.ones((4, 9), jnp.bfloat16)), 0.25, jax.random.key(0)).dtype == jnp.bfloat16


def test_sixteen_bit_numbers_are_uniform_and_both_halves_of_a_word_are_used():
    u = np.asarray(jax.jit(_bits16, static_argnums=1)(jax.random.key(0), (16, 2048)))
    assert u.min() >= 0 and u.max() < 65536
    assert abs(u.mean() - 32767.5) < 300                      # sd of the mean: 18919 / 181 = 105
    first, second = u[:, :1024], u[:, 1024:]                   # the high and low halves of the same words
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.02
    counts = np.bincount(u.ravel() >> 12, minlength=16)        # 16 bins of 2048 draws each
    assert counts.min() > 1800 and counts.max() < 2300


def test_mask_is_the_same_on_eight_devices_as_on_one():
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8
    x = jnp.asarray(np.random.default_rng(0).standard_normal((16, 10, 6)).astype(np.float32))
    one = jax.jit(lambda x: dropout(x, 0.3, jax.random.key(2)))(x)
    sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
    eight = jax.jit(lambda x: dropout(x, 0.3, jax.random.key(2)),
                    out_shardings=NamedSharding(mesh, P("data")))(sharded)
    np.testing.assert_array_equal(np.asarray(eight), np.asarray(one))
