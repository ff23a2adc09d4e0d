"""models.dcgan: shapes at every size, the paper's layer layout, BatchNorm against a hand computation,
eval mode independent of the batch, class conditioning, bad sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import jit
from vqgan_jax.errors import UserError
from vqgan_jax.models.dcgan import Discriminator, Generator, num_upsamplings


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 1), (64, 3)])
def test_shapes_and_layout(size, channels):
    g, d = Generator(image_size=size, channels=channels, ngf=4), Discriminator(image_size=size, ndf=4)
    z = jax.ShapeDtypeStruct((2, 10), jnp.float32)
    gv = jax.eval_shape(lambda z: g.init(jax.random.PRNGKey(0), z), z)
    x = jax.eval_shape(lambda v, z: g.apply(v, z), gv, z)
    assert x.shape == (2, size, size, channels)
    dv = jax.eval_shape(lambda x: d.init(jax.random.PRNGKey(0), x), x)
    assert jax.eval_shape(lambda v, x: d.apply(v, x), dv, x).shape == (2,)
    n = num_upsamplings(size)
    # G: 4x4 projection to ngf * 2^(n-1) channels, then halving; BatchNorm on every layer but the output.
    assert gv["params"]["project"]["kernel"].shape == (10, 16 * 4 * 2 ** (n - 1))
    assert sorted(gv["batch_stats"]) == [f"bn_{i}" for i in range(n)]
    assert gv["params"]["convt_out"]["kernel"].shape == (4, 4, 4, channels)
    # D: no BatchNorm on the first layer (Radford et al.), doubling widths, one 4x4 'VALID' conv to a logit.
    assert sorted(dv.get("batch_stats", {})) == [f"bn_{i}" for i in range(1, n)]
    assert dv["params"]["conv_0"]["kernel"].shape == (4, 4, channels, 4)
    assert dv["params"]["conv_out"]["kernel"].shape == (4, 4, 4 * 2 ** (n - 1), 1)


def test_64px_is_the_paper_architecture():
    g = Generator(image_size=64, channels=3, ngf=64)
    v = jax.eval_shape(lambda z: g.init(jax.random.PRNGKey(0), z), jax.ShapeDtypeStruct((1, 100), jnp.float32))
    widths = [v["params"][f"convt_{i}"]["kernel"].shape[-1] for i in (1, 2, 3)]
    assert v["params"]["project"]["kernel"].shape == (100, 4 * 4 * 512) and widths == [256, 128, 64]


@pytest.mark.parametrize("size", [0, 4, 24, 48])
def test_bad_sizes_are_user_errors(size):
    with pytest.raises(UserError, match="power of two"):
        num_upsamplings(size)


def test_batch_norm_statistics_by_hand():
    """Training mode: the running mean/var move 10% towards the batch's mean and (biased) variance over
    (B, H, W) of the conv output, and the output is normalised with the batch's statistics."""
    d = Discriminator(image_size=16, ndf=4)
    x = jit.normal(1, (6, 16, 16, 3))
    v = jit.init(d, jax.random.PRNGKey(0), x)
    _, state = jit.run(d, v, x, train=True, mutable=["batch_stats", "intermediates"],
                       capture_intermediates=lambda mdl, _: mdl.name in ("conv_1", "bn_1"))
    h = np.asarray(state["intermediates"]["conv_1"]["__call__"][0], np.float64)   # (6, 4, 4, 8) pre-BN
    mean, var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))
    stats = state["batch_stats"]["bn_1"]
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * var, rtol=1e-5, atol=1e-6)
    scale, bias = (np.asarray(v["params"]["bn_1"][k], np.float64) for k in ("scale", "bias"))
    want = (h - mean) / np.sqrt(var + 1e-5) * scale + bias
    np.testing.assert_allclose(state["intermediates"]["bn_1"]["__call__"][0], want, rtol=1e-4, atol=1e-4)


def test_eval_mode_uses_running_averages_and_is_per_image():
    g = Generator(image_size=16, channels=1, ngf=4)
    z = jax.random.normal(jax.random.PRNGKey(2), (4, 8))  # jax's draw: the statistics' effect is near 1e-3
    v = jit.init(g, jax.random.PRNGKey(0), z)

    @jax.jit  # the five passes in one program
    def passes(v, z):
        stats = jax.tree.map(lambda a: a + 0.5, v["batch_stats"])
        alone = g.apply({**v, "batch_stats": stats}, z[:1])
        together = g.apply({**v, "batch_stats": stats}, z)
        train1, _ = g.apply(v, z[:1], train=True, mutable=["batch_stats"])
        train4, _ = g.apply(v, z, train=True, mutable=["batch_stats"])
        return alone, together, g.apply(v, z), train1, train4

    alone, together, own_stats, train1, train4 = map(np.asarray, passes(v, z))
    np.testing.assert_allclose(alone[0], together[0], atol=1e-6)       # no batch dependence in eval mode
    assert float(np.abs(own_stats - together).max()) > 1e-3            # and the statistics are used
    assert float(np.abs(train1[0] - train4[0]).max()) > 1e-3          # training mode: batch statistics


def test_class_conditioning_changes_the_output():
    g = Generator(image_size=16, channels=3, ngf=4, num_classes=5)
    d = Discriminator(image_size=16, ndf=4, num_classes=5)
    z = np.zeros((2, 8), np.float32)  # only the class embedding differs between the two rows
    gv = jit.init(g, jax.random.PRNGKey(0), z, np.zeros((2,), np.int32))
    a = np.asarray(jit.run(g, gv, z, np.array([0, 1], np.int32)))
    assert gv["params"]["label_embed"]["embedding"].shape == (5, 50)
    assert float(np.abs(a[0] - a[1]).max()) > 0.1 * float(np.abs(a).max())
    x = jit.normal(3, (1, 16, 16, 3)).repeat(2, 0)
    dv = jit.init(d, jax.random.PRNGKey(0), x, np.zeros((2,), np.int32))
    la, lb = np.asarray(jit.run(d, dv, x, np.array([0, 3], np.int32)))
    assert abs(float(la - lb)) > 0.01 * max(abs(float(la)), abs(float(lb)))
    with pytest.raises(ValueError, match="needs labels"):
        g.apply(gv, z)
