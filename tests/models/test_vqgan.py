"""The VQGAN autoencoder: shapes, consistency of the apply methods, hand-computed parameter counts and
its config builder."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.base import get_base_config
from tests.jit import init as init_fast, run
from vqgan_jax import models
from vqgan_jax.errors import UserError
from vqgan_jax.models.vqgan import VQGAN, Encoder, from_config

TINY = dict(ch=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, num_codes=16, code_dim=4)


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
    # numpy: an eager random draw compiles slowly
    x = np.random.default_rng(1).uniform(-1.0, 1.0, (2, 16, 16, 3)).astype(np.float32)
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
    big = from_config(cfg)
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

    @jax.jit  # every method in one program: one compile instead of six
    def methods(v, x):
        out = {"ids": model.apply(v, x, method=VQGAN.encode_to_ids),
               "reconstruct": model.apply(v, x, method=VQGAN.reconstruct),
               "both": model.apply(v, x, method=VQGAN.reconstruct_with_ids),
               "encode": model.apply(v, x, method=VQGAN.encode)}
        out["decode_ids"] = model.apply(v, out["ids"], method=VQGAN.decode_ids)
        out["decode"] = model.apply(v, out["encode"][0], method=VQGAN.decode)
        return out

    out = methods(v, x)
    ids = out["ids"]
    np.testing.assert_array_equal(ids, aux["indices"])
    np.testing.assert_allclose(out["decode_ids"], x_hat, atol=1e-5)
    np.testing.assert_allclose(out["reconstruct"], x_hat, atol=1e-5)
    both = out["both"]
    np.testing.assert_allclose(both[0], x_hat, atol=1e-5)
    np.testing.assert_array_equal(both[1], aux["indices"])
    z_q, q = out["encode"]
    assert z_q.shape == (2, 8, 8, 4)
    np.testing.assert_allclose(q["loss"], aux["q_loss"], rtol=1e-6)
    np.testing.assert_allclose(out["decode"], x_hat, atol=1e-5)
    # The tiny random model still spreads its codes: a constant output would make the above vacuous.
    assert float(np.std(np.asarray(x_hat))) > 1e-3 and len(np.unique(ids)) > 1


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
    model16 = VQGAN(**{**TINY, "dtype": jnp.bfloat16})

    @jax.jit  # the three forwards in one program: one compile instead of three
    def forwards(p, v, x):
        return (enc32.apply(p, x, train=False), enc16.apply(p, x, train=False),
                model16.apply(v, x, train=False))

    z32, z16, (x_hat, aux) = forwards(p, v, x)
    assert z16.dtype == jnp.float32
    z32, z16 = np.asarray(z32), np.asarray(z16)  # numpy: eager jnp ops would each compile
    assert float(np.max(np.abs(z16 - z32))) < 0.05 * float(np.max(np.abs(z32)))
    assert x_hat.dtype == aux["h_last"].dtype == jnp.float32 and aux["z_e"].dtype == jnp.float32
    assert bool(np.all(np.isfinite(np.asarray(x_hat))))


def test_encoder_rejects_indivisible_size():
    with pytest.raises(UserError, match="not divisible"):
        jax.eval_shape(lambda x: VQGAN(**TINY).init(jax.random.key(0), x, train=False), jnp.zeros((1, 15, 15, 3)))


def test_vqgan_from_config():
    cfg = get_base_config()
    cfg.quantizer.ema = True
    cfg.quantizer.restart_threshold = 0.5
    cfg.model.dtype = "bfloat16"
    m = from_config(cfg)
    assert (m.ch, m.ch_mult, m.attn_resolutions, m.num_codes, m.code_dim) == (64, (1, 2, 2), (16,), 512, 64)
    assert (m.ema, m.restart_threshold, m.beta, m.dtype) == (True, 0.5, 0.25, jnp.bfloat16)
    cfg.model.dtype = "float16"
    with pytest.raises(UserError, match="dtype"):
        from_config(cfg)
    cfg.model.dtype = "float32"
    cfg.model.ch_mult = ()
    with pytest.raises(UserError, match="ch_mult"):
        from_config(cfg)


def test_registry_names_the_generator():
    cfg = get_base_config()
    assert cfg.model.name == "vqgan" and models.get(cfg.model.name).from_config is from_config
    with pytest.raises(UserError, match="unknown model 'nope'"):
        models.get("nope")
