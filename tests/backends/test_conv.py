"""The XLA:CPU backend's convolutions equal the plain ones: its Conv module (flax's params, init, numbers
and gradients, every rule on), Winograd's 3x3 conv and its gradients, and the upsampling conv (values,
gradients, second order)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.backends.xla_cpu import conv as fastconv, winograd
from vqgan_jax.backends.xla_cpu.conv import Conv, Upsample
from vqgan_jax.nn import layers
from vqgan_jax.nn.layers import torch_conv_init
from tests import jit


@pytest.mark.parametrize("kernel,stride,padding,use_bias", [
    (3, 1, "SAME", True), (1, 1, "SAME", True), (1, 1, "VALID", False), (1, 1, ((0, 0), (0, 0)), True),
    (1, 2, "SAME", True), (4, 2, ((1, 1), (1, 1)), True), (3, 2, ((0, 1), (0, 1)), True)])
def test_conv_module_has_flax_conv_params_init_numbers_and_gradients(kernel, stride, padding, use_bias):
    """Strided, padded, 1x1 and bias-free convs: the bias gradient is the backend's `tree_sum`."""
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 8, 8, 5)).astype(np.float32))
    ours = Conv(7, (kernel, kernel), (stride, stride), padding, use_bias)
    theirs = nn.Conv(7, (kernel, kernel), strides=(stride, stride), padding=padding, use_bias=use_bias,
                     kernel_init=torch_conv_init)
    p_ours, p_theirs = jit.init(ours, jax.random.PRNGKey(0), x), jit.init(theirs, jax.random.PRNGKey(0), x)
    assert jax.tree.structure(p_ours) == jax.tree.structure(p_theirs)
    for a, b in zip(jax.tree.leaves(p_ours), jax.tree.leaves(p_theirs)):
        np.testing.assert_array_equal(a, b)
    bias = {"bias": np.linspace(-1, 1, 7, dtype=np.float32)} if use_bias else {}
    p = {"params": {"kernel": p_ours["params"]["kernel"], **bias}}
    np.testing.assert_allclose(jit.run(ours, p, x), jit.run(theirs, p, x), rtol=1e-5, atol=1e-5)
    # jitted: op by op, every op of the gradient compiles on its own
    grad = lambda m: jax.jit(jax.grad(lambda p, x: jnp.sum(m.apply(p, x) ** 2), argnums=(0, 1)))(p, x)  # noqa: E731
    g_ours, g_theirs = grad(ours), grad(theirs)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def _nearest_then_conv(x, k):
    """The plain formula: nearest-neighbour 2x, then a 3x3 SAME conv."""
    up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return jax.lax.conv_general_dilated(up, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("size,c,o", [((3, 5), 2, 4), ((1, 1), 4, 2)])
def test_upsample_conv_and_its_gradients_equal_nearest_then_conv(size, c, o):
    """The four-phase forward and the stride-2 4x4 input gradient: odd, rectangular and 1x1 grids, C != O."""
    rng = np.random.default_rng(12)
    x = jnp.asarray(rng.standard_normal((2, *size, c)).astype(np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, c, o)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(_nearest_then_conv, x, k).shape).astype(np.float32))
    r = jnp.asarray(rng.standard_normal(x.shape).astype(np.float32))

    @jax.jit  # values, gradients and second order in one program (op by op, each op compiles on its own)
    def values_and_grads(x, k, g, r):
        # second order: d/dk of <grad_x, r>
        gg = lambda f: jax.grad(lambda k: jnp.sum(jax.grad(lambda x: jnp.sum(f(x, k) * g))(x) * r))(k)  # noqa: E731
        return (fastconv.upsample_conv(x, k), _nearest_then_conv(x, k), jax.vjp(fastconv.upsample_conv, x, k)[1](g),
                jax.vjp(_nearest_then_conv, x, k)[1](g), gg(fastconv.upsample_conv), gg(_nearest_then_conv))

    got, y, ours, plain, gg_ours, gg_plain = values_and_grads(x, k, g, r)
    np.testing.assert_allclose(got, y, rtol=1e-5, atol=1e-5)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.abs(np.asarray(b)).max()))
    np.testing.assert_allclose(gg_ours, gg_plain, rtol=1e-4, atol=1e-5 * float(np.abs(np.asarray(gg_plain)).max()))


def test_winograd_conv3x3_equals_a_direct_conv():
    """F(4x4, 3x3) on its own, any channel counts: within ~1e-5 of the output's scale."""
    rng = np.random.default_rng(13)
    x = jnp.asarray(rng.standard_normal((2, 8, 12, 5)).astype(np.float32))
    k = jnp.asarray(rng.standard_normal((3, 3, 5, 7)).astype(np.float32))
    # one program (op by op, each op of the transforms compiles on its own)
    got, y = jax.jit(lambda x, k: (winograd.conv3x3(x, k), jax.lax.conv_general_dilated(
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))))(x, k)
    np.testing.assert_allclose(got, y, rtol=0, atol=3e-5 * float(np.abs(np.asarray(y)).max()))


def test_winograd_applies_to_wide_float32_3x3_convs_on_multiples_of_4():
    assert winograd.applies((2, 8, 8, 128), (3, 3, 128, 64), jnp.float32)
    assert winograd.applies((2, 8, 8, 64), (3, 3, 64, 128), jnp.float32)
    assert not winograd.applies((2, 8, 8, 64), (3, 3, 64, 64), jnp.float32)        # too few channels
    assert not winograd.applies((2, 8, 8, 128), (3, 3, 128, 32), jnp.float32)
    assert not winograd.applies((2, 8, 6, 128), (3, 3, 128, 128), jnp.float32)     # W not a multiple of 4
    assert not winograd.applies((2, 8, 8, 128), (3, 3, 128, 128), jnp.bfloat16)
    assert not winograd.applies((2, 8, 8, 128), (5, 5, 128, 128), jnp.float32)


@pytest.mark.parametrize("c,o,padding", [(128, 64, "SAME"), (64, 128, ((1, 1), (1, 1)))])
def test_conv2d_by_winograd_and_its_gradients_equal_xlas(c, o, padding):
    """`conv2d`'s 3x3 rule: Winograd forward, input and kernel gradients. The path is taken (the numbers
    differ from XLA's by more than rounding) and `winograd_3x3=False` gives XLA's numbers."""
    rng = np.random.default_rng(14)
    x = jnp.asarray(rng.standard_normal((2, 4, 8, c)).astype(np.float32))
    k = jnp.asarray((rng.standard_normal((3, 3, c, o)) / np.sqrt(9 * c)).astype(np.float32))
    plain = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = lambda x, k: fastconv.conv2d(x, k, 1, padding)  # noqa: E731
    g = jnp.asarray(rng.standard_normal(jax.eval_shape(plain, x, k).shape).astype(np.float32))

    @jax.jit  # values and gradients in one program (op by op, each op compiles on its own)
    def values_and_grads(x, k, g):
        got, got_vjp = jax.vjp(ours, x, k)
        return (got, plain(x, k), got_vjp(g), jax.vjp(plain, x, k)[1](g),
                fastconv.conv2d(x, k, 1, padding, winograd_3x3=False))

    got, y, got_grads, plain_grads, xla_rule = (jax.tree.map(np.asarray, a) for a in values_and_grads(x, k, g))
    np.testing.assert_allclose(got, y, rtol=0, atol=3e-5 * float(np.abs(y).max()))
    assert float(np.abs(got - y).max()) > 0
    for a, b in zip(got_grads, plain_grads):
        np.testing.assert_allclose(a, b, rtol=0, atol=3e-5 * float(np.abs(b).max()))
        assert float(np.abs(a - b).max()) > 0
    np.testing.assert_array_equal(xla_rule, y)


def test_winograd_kernel_gradient_equals_xlas():
    rng = np.random.default_rng(15)
    x = jnp.asarray(rng.standard_normal((2, 8, 4, 5)).astype(np.float32))
    g = jnp.asarray(rng.standard_normal((2, 8, 4, 3)).astype(np.float32))
    conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    # one program (op by op, each op of the transforms compiles on its own)
    got, want = jax.jit(lambda x, g: (winograd.kernel_grad3x3(x, g),
                                      jax.vjp(lambda k: conv(x, k), jnp.zeros((3, 3, 5, 3)))[1](g)[0]))(x, g)
    np.testing.assert_allclose(got, want, rtol=0, atol=3e-5 * float(np.abs(np.asarray(want)).max()))


def test_upsample_module_has_the_plain_layers_params_and_numbers():
    """The backend's Upsample (four phase convs) against nn.layers.Upsample (nearest 2x + nn.Conv): same
    parameter tree from the same key, same outputs and gradients."""
    x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 4, 6, 8)).astype(np.float32))
    plain, ours = layers.Upsample(), Upsample()
    p_plain, p_ours = jit.init(plain, jax.random.PRNGKey(1), x), jit.init(ours, jax.random.PRNGKey(1), x)
    assert jax.tree.structure(p_plain) == jax.tree.structure(p_ours)
    for a, b in zip(jax.tree.leaves(p_plain), jax.tree.leaves(p_ours)):
        np.testing.assert_array_equal(a, b)
    p = jax.tree.map(lambda a: np.asarray(a) + np.float32(0.1), p_plain)
    np.testing.assert_allclose(jit.run(ours, p, x), jit.run(plain, p, x), rtol=1e-5, atol=1e-5)
    # jitted: op by op, every op of the gradient compiles on its own
    grad = lambda m: jax.jit(jax.grad(lambda p, x: jnp.sum(m.apply(p, x) ** 2), argnums=(0, 1)))(p, x)  # noqa: E731
    for a, b in zip(jax.tree.leaves(grad(ours)), jax.tree.leaves(grad(plain))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(np.asarray(b)).max()))
