"""Loss math against hand computations: reconstruction, hinge / non-saturating GAN losses, the adaptive weight, R1, LeCam."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import jit
from vqgan_jax.losses import gan as losses
from vqgan_jax.losses.reconstruction import reconstruction_loss
from vqgan_jax.errors import UserError


def test_reconstruction_l1_l2_table():
    x = jnp.array([[0.0, 1.0], [-1.0, 0.5]])
    x_hat = jnp.array([[0.5, 1.0], [1.0, -0.5]])
    loss = jax.jit(reconstruction_loss, static_argnums=2)  # one program per kind, not one per op
    # |diff| = 0.5, 0, 2, 1
    assert float(loss(x, x_hat, "l1")) == pytest.approx(3.5 / 4)
    assert float(loss(x, x_hat, "l2")) == pytest.approx((0.25 + 0 + 4 + 1) / 4)
    assert float(loss(x, x_hat)) == pytest.approx(3.5 / 4)  # l1 by default


def test_reconstruction_is_float32_for_bf16_inputs():
    x = jnp.ones((2, 3), jnp.bfloat16)
    out = reconstruction_loss(x, jnp.zeros_like(x), "l2")
    assert out.dtype == jnp.float32 and float(out) == 1.0


def test_unknown_kinds_raise_user_error_listing_choices():
    x = jnp.zeros((2, 2))
    with pytest.raises(UserError, match="l1, l2"):
        reconstruction_loss(x, x, "huber")
    with pytest.raises(UserError, match="hinge, non_saturating"):
        losses.d_loss(x, x, "wasserstein")
    with pytest.raises(UserError, match="hinge, non_saturating"):
        losses.g_adv_loss(x, "lsgan")


def test_hinge_table():
    real = jnp.array([2.0, 0.5, -1.0])
    fake = jnp.array([-2.0, 0.0, 1.5])
    d_loss = jax.jit(losses.d_loss, static_argnums=2)  # one program per kind, not one per op
    g_adv_loss = jax.jit(losses.g_adv_loss, static_argnums=1)
    # relu(1 - real) = 0, 0.5, 2 -> mean 2.5/3; relu(1 + fake) = 0, 1, 2.5 -> mean 3.5/3
    assert float(d_loss(real, fake, "hinge")) == pytest.approx(0.5 * (2.5 / 3 + 3.5 / 3))
    assert float(g_adv_loss(fake, "hinge")) == pytest.approx(0.5 / 3)


def test_non_saturating_table():
    ln3 = math.log(3.0)
    real = jnp.array([0.0, ln3])
    fake = jnp.array([0.0, -ln3])
    # softplus(0) = ln 2, softplus(-ln 3) = ln(4/3), softplus(ln 3) = ln 4
    d_loss = jax.jit(losses.d_loss, static_argnums=2)  # one program per kind, not one per op
    g_adv_loss = jax.jit(losses.g_adv_loss, static_argnums=1)
    expected_d = 0.5 * ((math.log(2) + math.log(4 / 3)) / 2 + (math.log(2) + math.log(4 / 3)) / 2)
    assert float(d_loss(real, fake, "non_saturating")) == pytest.approx(expected_d, rel=1e-6)
    assert float(g_adv_loss(fake, "non_saturating")) == pytest.approx(
        (math.log(2) + math.log(4)) / 2, rel=1e-6)


def test_non_saturating_is_stable_for_large_logits():
    real = jnp.array([200.0, -200.0])
    d = losses.d_loss(real, -real, "non_saturating")
    # softplus(-200) ~ 0, softplus(200) = 200: 0.5 * (100 + 100)
    assert float(d) == pytest.approx(100.0)


def test_adaptive_weight_hand_values():
    grad_rec = jnp.array([[3.0, 4.0]])          # norm 5
    grad_adv = jnp.array([[0.0, 1.0]])          # norm 1
    w = losses.adaptive_weight(grad_rec, grad_adv, disc_weight=0.5)
    assert float(w) == pytest.approx(0.5 * 5.0 / (1.0 + 1e-4), rel=1e-6)
    assert w.dtype == jnp.float32
    # zero adversarial gradient: 5 / 1e-4 = 5e4, clipped to max_weight before disc_weight
    zero = jnp.zeros_like(grad_adv)
    assert float(losses.adaptive_weight(grad_rec, zero, 0.5)) == pytest.approx(0.5 * 1e4)
    assert float(losses.adaptive_weight(grad_rec, zero, 0.5, max_weight=100.0)) == pytest.approx(50.0)
    # below the clip the +1e-4 is what keeps the value finite and exact
    assert float(losses.adaptive_weight(grad_rec * 1e-3, grad_adv * 1e-4, 1.0)) == pytest.approx(
        5e-3 / (1e-4 + 1e-4), rel=1e-4)


def test_adaptive_weight_has_no_gradient():
    grad_rec = jnp.array([3.0, 4.0])
    grad_adv = jnp.array([1.0, 0.0])
    g = jax.jit(jax.grad(lambda a, b: losses.adaptive_weight(a, b, 0.8), argnums=(0, 1)))(grad_rec, grad_adv)
    assert all(float(jnp.abs(x).max()) == 0.0 for x in g)


def test_conv_kernel_grad_matches_flax_conv_grad():
    rng = np.random.default_rng(0)  # numpy data: an eager jax.random draw compiles a kernel per shape
    h = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
    conv = nn.Conv(4, (3, 3), padding="SAME")
    params = jit.init(conv, jax.random.PRNGKey(1), h)["params"]
    cot = rng.standard_normal((2, 5, 6, 4)).astype(np.float32)

    def loss(kernel):
        out = conv.apply({"params": {**params, "kernel": kernel}}, h)
        return jnp.sum(out * cot)       # so d loss / d out == cot

    # the reference and the function under test in one program (op by op, each op compiles on its own)
    want, got = jax.jit(lambda k: (jax.grad(loss)(k), losses.conv_kernel_grad(h, k, cot)))(params["kernel"])
    assert got.shape == (3, 3, 3, 4) and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(want).max()) > 0.1


def test_conv_kernel_grad_rejects_mismatched_shapes():
    with pytest.raises(ValueError):
        losses.conv_kernel_grad(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 2)), jnp.zeros((1, 4, 4, 5)))


def test_r1_linear_discriminator_is_squared_weight_norm():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 4, 3)).astype(np.float32)
    x = rng.standard_normal((5, 4, 4, 3)).astype(np.float32)
    d_apply = lambda x: jnp.sum(w * x, axis=(1, 2, 3))     # (B,)
    r1 = jax.jit(lambda x: losses.r1_penalty(d_apply, x))  # one program, not op by op
    assert float(r1(x)) == pytest.approx(float(np.sum(w * w)), rel=1e-5)


def test_r1_is_a_batch_mean_of_per_image_norms():
    x = np.array([1.0, 2.0, 3.0], np.float32).reshape(3, 1, 1, 1) * np.ones((3, 2, 2, 1), np.float32)
    d_apply = lambda x: jnp.sum(jnp.square(x), axis=(1, 2, 3))[:, None]   # grad 2x per image
    # per image ||2x||^2 = 4 * 4 * c^2 for c = 1, 2, 3 -> 16, 64, 144; mean 224/3
    assert float(jax.jit(lambda x: losses.r1_penalty(d_apply, x))(x)) == pytest.approx(224.0 / 3)


def test_lecam_table_and_ema():
    real = jnp.array([1.0, 3.0])
    fake = jnp.array([-1.0, 0.5])
    # relu(real - 0.5)^2 = 0.25, 6.25 -> 3.25; relu(2 - fake)^2 = 9, 2.25 -> 5.625
    assert float(losses.lecam_regularizer(real, fake, ema_real=2.0, ema_fake=0.5)) == pytest.approx(8.875)
    # terms vanish once real <= ema_fake and fake >= ema_real
    assert float(losses.lecam_regularizer(jnp.array([0.0]), jnp.array([5.0]), 1.0, 2.0)) == 0.0
    assert float(losses.update_lecam_ema(1.0, 3.0, 0.9)) == pytest.approx(1.2)


def test_lecam_gradient_does_not_reach_emas():
    g = jax.grad(lambda er, ef: losses.lecam_regularizer(jnp.array([1.0, 3.0]), jnp.array([-1.0]), er, ef),
                 argnums=(0, 1))(2.0, 0.5)
    assert g == (0.0, 0.0)
