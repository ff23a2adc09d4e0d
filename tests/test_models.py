"""VQGAN autoencoder, its layers and the PatchDiscriminator: shapes, consistency of the apply methods,
hand-computed parameter counts, layer semantics against hand-written references, and config builders."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.base import get_base_config
from vqgan_jax.autoencoder import VQGAN, Encoder, vqgan_from_config
from vqgan_jax.discriminator import PatchDiscriminator, discriminator_from_config
from vqgan_jax.errors import UserError
from vqgan_jax.layers import AttnBlock, Downsample, GroupNorm, ResnetBlock, Upsample, init_fast

TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, num_codes=16, code_dim=4)


def run(module, variables, *args, **kwargs):
    """module.apply under one jax.jit (op-by-op dispatch compiles every op separately: slower)."""
    return jax.jit(functools.partial(module.apply, **kwargs))(variables, *args)


def n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


# ---- hand counts, layer by layer as in taming's model.py ---------------------------------------
def conv_p(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def res_p(c_in, c_out):
    return 2 * c_in + conv_p(3, c_in, c_out) + 2 * c_out + conv_p(3, c_out, c_out) + (
        conv_p(1, c_in, c_out) if c_in != c_out else 0)


def attn_p(c):
    return 2 * c + 4 * conv_p(1, c, c)


def vqgan_p(ch, ch_mult, num_res_blocks, attn_levels, z, k, d):
    """attn_levels: indices of the levels whose resolution is in attn_resolutions."""
    enc, c = conv_p(3, 3, ch), ch
    for i, m in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            enc += res_p(c, ch * m) + (attn_p(ch * m) if i in attn_levels else 0)
            c = ch * m
        enc += conv_p(3, c, c) if i != len(ch_mult) - 1 else 0
    enc += 2 * res_p(c, c) + attn_p(c) + 2 * c + conv_p(3, c, z)
    dec = conv_p(3, z, c) + 2 * res_p(c, c) + attn_p(c)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            dec += res_p(c, ch * ch_mult[i]) + (attn_p(ch * ch_mult[i]) if i in attn_levels else 0)
            c = ch * ch_mult[i]
        dec += conv_p(3, c, c) if i != 0 else 0
    dec += 2 * c + conv_p(3, c, 3)
    return enc + dec + conv_p(1, z, d) + conv_p(1, d, z) + k * d


@pytest.fixture(scope="module")
def tiny():
    """The TINY VQGAN at 16px (latent 8x8), its variables and a batch of 2 images."""
    model = VQGAN(**TINY)
    x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
    variables = init_fast(model, jax.random.key(0), x, train=False)
    x_hat, aux = run(model, variables, x, train=False)
    return model, variables, x, x_hat, aux


def test_variables_are_params_and_vq_stats_only(tiny):
    model, variables, *_ = tiny
    assert set(variables) == {"params", "vq_stats"}  # GroupNorm: no batch statistics
    assert set(variables["params"]) == {"encoder", "quant_conv", "quantize", "post_quant_conv", "decoder"}
    assert variables["params"]["decoder"]["conv_out"]["kernel"].shape == (3, 3, 8, 3)
    assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(variables))
    ema = VQGAN(**{**TINY, "ema": True})
    v = jax.eval_shape(lambda x: ema.init(jax.random.key(0), x, train=False), jnp.zeros((1, 16, 16, 3)))
    assert "quantize" not in v["params"] and v["vq_stats"]["quantize"]["codebook"].shape == (16, 4)


def test_param_count_by_hand(tiny):
    _, variables, *_ = tiny
    assert n_params(variables["params"]) == vqgan_p(8, (1, 2), 1, {1}, 4, 16, 4)
    # flowers64: 4,162,691, the count of taming's model of the same config.
    cfg = get_base_config()
    big = vqgan_from_config(cfg.model, cfg.quantizer)
    shapes = jax.eval_shape(lambda x: big.init(jax.random.key(0), x, train=False), jnp.zeros((1, 64, 64, 3)))
    assert n_params(shapes["params"]) == vqgan_p(64, (1, 2, 2), 1, {2}, 64, 512, 64) == 4_162_691


@pytest.mark.parametrize("ch_mult, size, attn, latent, attn_levels", [
    ((1, 2), 16, (), 8, set()),
    ((1, 2, 2), 32, (16,), 8, {1}),
    ((1, 1, 2), 8, (8,), 2, {0}),
])
def test_shapes(ch_mult, size, attn, latent, attn_levels):
    model = VQGAN(**{**TINY, "ch_mult": ch_mult, "attn_resolutions": attn})
    x = jnp.zeros((3, size, size, 3))
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    x_hat, aux = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), v, x)
    assert x_hat.shape == (3, size, size, 3) and x_hat.dtype == jnp.float32
    assert aux["indices"].shape == (3, latent, latent) and aux["indices"].dtype == jnp.int32
    assert aux["z_e"].shape == (3, latent, latent, 4)
    assert aux["h_last"].shape == (3, size, size, 8)
    for name in ("q_loss", "codebook_loss", "commit_loss", "usage", "perplexity", "num_restarted"):
        assert aux[name].shape == ()
    enc = v["params"]["encoder"]
    assert {i for i in range(len(ch_mult)) if f"down_{i}_attn_0" in enc} == attn_levels
    assert {i for i in range(len(ch_mult)) if f"up_{i}_attn_1" in v["params"]["decoder"]} == attn_levels
    assert n_params(v["params"]) == vqgan_p(8, ch_mult, 1, attn_levels, 4, 16, 4)


def test_methods_agree_with_call_in_eval_mode(tiny):
    model, v, x, x_hat, aux = tiny
    ids = run(model, v, x, method=VQGAN.encode_to_ids)
    np.testing.assert_array_equal(ids, aux["indices"])
    np.testing.assert_allclose(run(model, v, ids, method=VQGAN.decode_ids), x_hat, atol=1e-5)
    np.testing.assert_allclose(run(model, v, x, method=VQGAN.reconstruct), x_hat, atol=1e-5)
    z_q, q = run(model, v, x, method=VQGAN.encode)
    assert z_q.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(q["loss"], aux["q_loss"], rtol=1e-6)
    np.testing.assert_allclose(run(model, v, z_q, method=VQGAN.decode), x_hat, atol=1e-5)
    # The tiny random model still spreads its codes: a constant output would make the above vacuous.
    assert float(jnp.std(x_hat)) > 1e-3 and len(np.unique(ids)) > 1


def test_h_last_is_the_input_of_conv_out(tiny):
    _, v, _, x_hat, aux = tiny
    p = v["params"]["decoder"]["conv_out"]
    y = jax.lax.conv_general_dilated(aux["h_last"], p["kernel"], (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["bias"]
    np.testing.assert_allclose(y, x_hat, atol=1e-5)
    assert float(jnp.min(aux["h_last"])) >= -0.2785  # after swish, whose minimum is -0.2785


def test_train_mode_updates_usage_and_is_deterministic(tiny):
    model, v, x, x_hat, _ = tiny
    fn = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["vq_stats"]))
    (y1, aux), state = fn(v, x)
    (y2, _), _ = fn(v, x)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(y1, x_hat, atol=1e-5)  # no dropout: train == eval output
    counts = np.bincount(np.asarray(aux["indices"]).ravel(), minlength=16)
    np.testing.assert_allclose(state["vq_stats"]["quantize"]["usage"], 0.99 + 0.01 * counts, rtol=1e-6)


def test_bfloat16_runs_close_to_float32(tiny):
    _, v, x, _, _ = tiny
    enc32 = Encoder(8, (1, 2), 1, (8,), 4)
    enc16 = Encoder(8, (1, 2), 1, (8,), 4, dtype=jnp.bfloat16)
    p = {"params": v["params"]["encoder"]}
    z32, z16 = run(enc32, p, x, train=False), run(enc16, p, x, train=False)
    assert z16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(z16 - z32))) < 0.05 * float(jnp.max(jnp.abs(z32)))
    model16 = VQGAN(**{**TINY, "dtype": jnp.bfloat16})
    x_hat, aux = run(model16, v, x, train=False)
    assert x_hat.dtype == aux["h_last"].dtype == jnp.float32 and aux["z_e"].dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(x_hat)))


# ---- layers --------------------------------------------------------------------------------------
def test_group_norm_matches_flax():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16)) * 3 + 1
    p = {"params": {"scale": jnp.linspace(0.5, 2, 16), "bias": jnp.linspace(-1, 1, 16)}}
    want = run(nn.GroupNorm(num_groups=4, epsilon=1e-6), p, x)
    np.testing.assert_allclose(run(GroupNorm(4), p, x), want, atol=1e-5)
    assert run(GroupNorm(4, dtype=jnp.bfloat16), p, x).dtype == jnp.bfloat16


def test_resnet_block_dropout_only_in_train():
    block = ResnetBlock(out_channels=16, dropout=0.5)
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 8))
    v = init_fast(block, jax.random.key(0), x, train=False)
    assert "nin_shortcut" in v["params"]
    e1, e2 = run(block, v, x, train=False), run(block, v, x, train=False)
    np.testing.assert_array_equal(e1, e2)
    t = run(block, v, x, train=True, rngs={"dropout": jax.random.key(1)})
    assert t.shape == (1, 4, 4, 16) and not np.allclose(t, e1)


def test_attention_matches_hand_softmax():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 8))
    block = AttnBlock()
    v = init_fast(block, jax.random.key(1), x)
    p = v["params"]
    hn = run(GroupNorm(8, 1e-6), {"params": p["norm"]}, x).reshape(2, 9, 8)
    q, k, val = (hn @ p[n]["kernel"][0, 0] + p[n]["bias"] for n in ("q", "k", "v"))
    w = jax.nn.softmax(q @ k.transpose(0, 2, 1) / np.sqrt(8), axis=-1)  # (B, HW, HW)
    want = x.reshape(2, 9, 8) + (w @ val) @ p["proj_out"]["kernel"][0, 0] + p["proj_out"]["bias"]
    np.testing.assert_allclose(run(block, v, x), want.reshape(x.shape), atol=1e-5)


def identity_conv(c):
    """A 3x3 kernel that copies its centre tap: the conv is the identity on a stride-1 grid."""
    k = np.zeros((3, 3, c, c), np.float32)
    k[1, 1] = np.eye(c)
    return {"params": {"conv": {"kernel": jnp.asarray(k), "bias": jnp.zeros(c)}}}


def test_downsample_pads_bottom_right_like_taming():
    x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 6, 3)
    y = Downsample().apply(identity_conv(3), x)
    np.testing.assert_array_equal(y, x[:, 1::2, 1::2])  # window 2i..2i+2 centred on 2i+1
    k = np.zeros((3, 3, 3, 3), np.float32)
    k[2, 2] = np.eye(3)  # bottom-right tap of the last window falls on the zero padding
    y = Downsample().apply({"params": {"conv": {"kernel": k, "bias": jnp.zeros(3)}}}, x)
    np.testing.assert_array_equal(y[:, :2, :2], x[:, 2:6:2, 2:6:2])
    assert float(jnp.abs(y[:, 2]).max()) == 0.0 and float(jnp.abs(y[:, :, 2]).max()) == 0.0


def test_upsample_is_nearest_then_conv3x3():
    x = jnp.arange(2 * 3 * 4 * 5, dtype=jnp.float32).reshape(2, 3, 4, 5)
    up = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(run(Upsample(), identity_conv(5), x), up)
    # Any kernel: the phase-folded computation equals nearest 2x followed by the plain 3x3 SAME conv.
    v = init_fast(Upsample(), jax.random.key(2), x)
    v = jax.tree_util.tree_map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(3), a.shape), v)
    want = run(nn.Conv(5, (3, 3)), {"params": v["params"]["conv"]}, jnp.asarray(up))
    np.testing.assert_allclose(run(Upsample(), v, x), want, rtol=1e-5, atol=1e-4)


def test_encoder_rejects_indivisible_size():
    with pytest.raises(UserError, match="not divisible"):
        jax.eval_shape(lambda x: VQGAN(**TINY).init(jax.random.key(0), x, train=False), jnp.zeros((1, 15, 15, 3)))


# ---- discriminator -------------------------------------------------------------------------------
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


def test_init_fast_equals_optimised_init():
    d = PatchDiscriminator(ndf=8, n_layers=2)
    x = jnp.zeros((1, 16, 16, 3))
    fast = init_fast(d, jax.random.key(5), x)
    slow = jax.jit(d.init)(jax.random.key(5), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, fast, slow)
    assert float(jnp.std(fast["params"]["conv_1"]["kernel"])) > 0


def test_discriminator_config_and_errors():
    cfg = get_base_config()
    d = discriminator_from_config(cfg.disc, "bfloat16")
    assert (d.ndf, d.n_layers, d.norm, d.dtype) == (64, 3, "group", jnp.bfloat16)
    with pytest.raises(UserError, match="disc.norm"):
        discriminator_from_config(ml_collections.ConfigDict({"ndf": 8, "n_layers": 3, "norm": "batch"}))
    with pytest.raises(UserError, match="norm"):
        jax.eval_shape(PatchDiscriminator(norm="batch").init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_vqgan_from_config():
    cfg = get_base_config()
    cfg.quantizer.ema = True
    cfg.quantizer.restart_threshold = 0.5
    cfg.model.dtype = "bfloat16"
    m = vqgan_from_config(cfg.model, cfg.quantizer)
    assert (m.ch, m.ch_mult, m.attn_resolutions, m.num_codes, m.code_dim) == (64, (1, 2, 2), (16,), 512, 64)
    assert (m.ema, m.restart_threshold, m.beta, m.dtype) == (True, 0.5, 0.25, jnp.bfloat16)
    cfg.model.dtype = "float16"
    with pytest.raises(UserError, match="dtype"):
        vqgan_from_config(cfg.model, cfg.quantizer)
    cfg.model.dtype = "float32"
    cfg.model.ch_mult = ()
    with pytest.raises(UserError, match="ch_mult"):
        vqgan_from_config(cfg.model, cfg.quantizer)
