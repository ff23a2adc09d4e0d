"""The VQGAN's building blocks against hand-written references: dropout, attention, taming's down- and
upsampling, the conv and norm helpers."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.jit import init as init_fast, normal, run
from vqgan_jax.errors import UserError
from vqgan_jax.nn.layers import AttnBlock, Downsample, ResnetBlock, Upsample, dtype_from_name, num_groups_for


def test_resnet_block_dropout_only_in_train():
    block = ResnetBlock(out_channels=16, dropout=0.5)
    x = normal(0, (1, 4, 4, 8))
    v = init_fast(block, jax.random.key(0), x, train=False)
    assert "nin_shortcut" in v["params"]
    evaluate = jax.jit(lambda v, x: block.apply(v, x, train=False))  # compiled once, run twice
    e1, e2 = evaluate(v, x), evaluate(v, x)
    np.testing.assert_array_equal(e1, e2)
    t = run(block, v, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert t.shape == (1, 4, 4, 16) and not np.allclose(t, e1)


def test_attention_matches_hand_softmax():
    x = normal(0, (2, 3, 3, 8))
    block = AttnBlock()
    v = init_fast(block, jax.random.key(1), x)

    @jax.jit  # the hand reference in one program, not op by op
    def reference(p, x):
        hn = nn.GroupNorm(8, epsilon=1e-6).apply({"params": p["norm"]}, x).reshape(2, 9, 8)
        q, k, val = (hn @ p[n]["kernel"][0, 0] + p[n]["bias"] for n in ("q", "k", "v"))
        w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8), axis=-1)  # (B, HW, HW)
        return x.reshape(2, 9, 8) + (w @ val) @ p["proj_out"]["kernel"][0, 0] + p["proj_out"]["bias"]

    want = reference(v["params"], x)
    np.testing.assert_allclose(run(block, v, x), want.reshape(x.shape), atol=1e-5)


def identity_conv(c):
    """A 3x3 kernel that copies its centre tap: the conv is the identity on a stride-1 grid."""
    k = np.zeros((3, 3, c, c), np.float32)
    k[1, 1] = np.eye(c)
    return {"params": {"conv": {"kernel": k, "bias": np.zeros(c, np.float32)}}}


def test_downsample_pads_bottom_right_like_taming():
    x = np.arange(2 * 6 * 6 * 3, dtype=np.float32).reshape(2, 6, 6, 3)
    y = np.asarray(run(Downsample(), identity_conv(3), x))
    np.testing.assert_array_equal(y, x[:, 1::2, 1::2])  # window 2i..2i+2 centred on 2i+1
    k = np.zeros((3, 3, 3, 3), np.float32)
    k[2, 2] = np.eye(3)  # bottom-right tap of the last window falls on the zero padding
    y = np.asarray(run(Downsample(), {"params": {"conv": {"kernel": k, "bias": np.zeros(3, np.float32)}}}, x))
    np.testing.assert_array_equal(y[:, :2, :2], x[:, 2:6:2, 2:6:2])
    assert float(np.abs(y[:, 2]).max()) == 0.0 and float(np.abs(y[:, :, 2]).max()) == 0.0


def test_upsample_is_nearest_then_conv3x3():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(run(Upsample(), identity_conv(5), x), up)
    v = init_fast(Upsample(), jax.random.key(2), x)
    want = run(nn.Conv(5, (3, 3)), {"params": v["params"]["conv"]}, up)
    np.testing.assert_allclose(run(Upsample(), v, x), want, rtol=1e-6, atol=1e-5)


def test_num_groups_and_dtype_names():
    assert [num_groups_for(c) for c in (8, 32, 64, 96, 100)] == [8, 32, 32, 32, 25]
    assert dtype_from_name("bfloat16") == jnp.bfloat16
    with pytest.raises(UserError, match="float16"):
        dtype_from_name("float16")
