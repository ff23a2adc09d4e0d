"""The VQGAN autoencoder: convolutional Encoder and Decoder (taming-transformers layout) around a
VectorQuantizer, and `from_config` to build it from the `model` and `quantizer` config sections.

Plain Flax: the layer constructors (`conv`, `norm`, `dropout_layer`, `upsample`) are fields with flax's
layers as defaults (see `vqgan_jax.nn.layers`); a trainer may pass a backend's layers with the same
parameter names. Images are float32 (B, H, W, 3) in [-1, 1]; the latent grid is (B, H/f, W/f) with
f = 2**(len(ch_mult)-1).
"""
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from vqgan_jax.errors import UserError
from vqgan_jax.nn.layers import (AttnBlock, Downsample, ModuleDef, ResnetBlock, Upsample, conv, dtype_from_name,
                                 normalize)
from vqgan_jax.nn.quantizer import VectorQuantizer

Dtype = Any


def _layers(module) -> dict:
    """The conv / norm / dropout constructors a block needs, passed on from `module`."""
    return dict(conv=module.conv, norm=module.norm, dropout_layer=module.dropout_layer)


class Encoder(nn.Module):
    """x: float (B, H, W, C) -> z: float32 (B, H/f, W/f, z_channels), f = 2**(len(ch_mult)-1).

    Attention follows every ResnetBlock of a level whose spatial size (read from x.shape at trace
    time; square images assumed, as in taming) is in attn_resolutions.
    """
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    attn_resolutions: Sequence[int]
    z_channels: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        f = 2 ** (len(self.ch_mult) - 1)
        if x.shape[1] % f or x.shape[2] % f:
            raise UserError(f"image size {x.shape[1]}x{x.shape[2]} is not divisible by {f}, the "
                            f"downsampling factor of ch_mult={tuple(self.ch_mult)}")
        lay = _layers(self)
        h = conv(self.conv, self.ch, 3, self.dtype, "conv_in")(x)
        for i, mult in enumerate(self.ch_mult):
            for j in range(self.num_res_blocks):
                h = ResnetBlock(self.ch * mult, self.dropout, self.dtype, **lay, name=f"down_{i}_block_{j}")(
                    h, train=train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.dtype, self.conv, self.norm, name=f"down_{i}_attn_{j}")(h)
            if i != len(self.ch_mult) - 1:
                h = Downsample(self.dtype, self.conv, name=f"down_{i}_downsample")(h)
        h = ResnetBlock(None, self.dropout, self.dtype, **lay, name="mid_block_1")(h, train=train)
        h = AttnBlock(self.dtype, self.conv, self.norm, name="mid_attn_1")(h)
        h = ResnetBlock(None, self.dropout, self.dtype, **lay, name="mid_block_2")(h, train=train)
        h = nn.swish(normalize(self.norm, h.shape[-1], self.dtype, "norm_out")(h))
        return conv(self.conv, self.z_channels, 3, self.dtype, "conv_out")(h).astype(jnp.float32)


class Decoder(nn.Module):
    """z: float (B, h, w, z_channels) -> (x_hat float32 (B, h*f, w*f, out_channels), h_last).

    h_last: float32 (B, H, W, ch*ch_mult[0]), the input of the final conv `conv_out` (after norm and
    swish): with params['conv_out'] it gives the gradient of any loss wrt the last layer's kernel
    without a second backward pass through the decoder (taming's adaptive GAN weight).
    """
    ch: int
    ch_mult: Sequence[int]
    num_res_blocks: int
    attn_resolutions: Sequence[int]
    z_channels: int
    dropout: float = 0.0
    out_channels: int = 3
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout
    upsample: ModuleDef = Upsample

    @nn.compact
    def __call__(self, z: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        lay = _layers(self)
        h = conv(self.conv, self.ch * self.ch_mult[-1], 3, self.dtype, "conv_in")(z)
        h = ResnetBlock(None, self.dropout, self.dtype, **lay, name="mid_block_1")(h, train=train)
        h = AttnBlock(self.dtype, self.conv, self.norm, name="mid_attn_1")(h)
        h = ResnetBlock(None, self.dropout, self.dtype, **lay, name="mid_block_2")(h, train=train)
        for i in reversed(range(len(self.ch_mult))):
            for j in range(self.num_res_blocks + 1):
                h = ResnetBlock(self.ch * self.ch_mult[i], self.dropout, self.dtype, **lay,
                                name=f"up_{i}_block_{j}")(h, train=train)
                if h.shape[1] in self.attn_resolutions:
                    h = AttnBlock(self.dtype, self.conv, self.norm, name=f"up_{i}_attn_{j}")(h)
            if i != 0:
                h = self.upsample(self.dtype, self.conv, name=f"up_{i}_upsample")(h)
        h = nn.swish(normalize(self.norm, h.shape[-1], self.dtype, "norm_out")(h))
        x_hat = conv(self.conv, self.out_channels, 3, self.dtype, "conv_out")(h)
        return x_hat.astype(jnp.float32), h.astype(jnp.float32)


class VQGAN(nn.Module):
    """Encoder -> quant_conv (1x1) -> VectorQuantizer -> post_quant_conv (1x1) -> Decoder.

    Variables: 'params' and 'vq_stats' (the quantizer's usage EMA, plus the codebook with ema=True).
    Train with `apply(variables, x, train=True, mutable=['vq_stats'], rngs={'vq': ..., 'dropout': ...})`;
    other methods are used as `apply(variables, x, method=VQGAN.encode_to_ids)`.
    """
    ch: int = 64
    ch_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: Sequence[int] = (16,)
    z_channels: int = 64
    dropout: float = 0.0
    num_codes: int = 512
    code_dim: int = 64
    beta: float = 0.25
    l2_normalize: bool = False
    ema: bool = False
    ema_decay: float = 0.99
    restart_threshold: float = 0.0
    usage_decay: float = 0.99
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout
    upsample: ModuleDef = Upsample

    def setup(self):
        arch = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), z_channels=self.z_channels,
                    dropout=self.dropout, dtype=self.dtype, **_layers(self))
        self.encoder = Encoder(**arch)
        self.quant_conv = conv(self.conv, self.code_dim, 1, self.dtype, None)
        self.quantize = VectorQuantizer(
            num_codes=self.num_codes, code_dim=self.code_dim, beta=self.beta, l2_normalize=self.l2_normalize,
            ema=self.ema, ema_decay=self.ema_decay, restart_threshold=self.restart_threshold,
            usage_decay=self.usage_decay, dtype=self.dtype)
        self.post_quant_conv = conv(self.conv, self.z_channels, 1, self.dtype, None)
        self.decoder = Decoder(**arch, upsample=self.upsample)

    def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: float32 (B, H, W, 3) in [-1, 1] -> (x_hat float32 (B, H, W, 3), aux).

        aux: 'q_loss' (codebook_loss + beta*commit_loss), 'codebook_loss', 'commit_loss', 'indices' int32
        (B, h, w), 'usage', 'perplexity', 'num_restarted', 'h_last' float32 (B, H, W, ch*ch_mult[0]) (the
        decoder's conv_out input), 'z_e' float32 (B, h, w, code_dim) (the pre-quantization latent).
        """
        z_q, q = self.encode(x, train=train)
        x_hat, h_last = self.decoder(self.post_quant_conv(z_q), train=train)
        aux = {"q_loss": q["loss"], "codebook_loss": q["codebook_loss"], "commit_loss": q["commit_loss"],
               "indices": q["indices"], "usage": q["usage"], "perplexity": q["perplexity"],
               "num_restarted": q["num_restarted"], "h_last": h_last, "z_e": q["z_e"]}
        return x_hat, aux

    def encode(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: (B, H, W, 3) -> (z_q (B, h, w, code_dim) in `dtype`, the quantizer's aux)."""
        z = self.quant_conv(self.encoder(x, train=train))
        return self.quantize(z, train=train)

    def encode_to_ids(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, 3) -> code ids int32 (B, h, w) (eval mode)."""
        return self.encode(x, train=False)[1]["indices"]

    def decode(self, z_q: jax.Array, *, train: bool = False) -> jax.Array:
        """z_q: (B, h, w, code_dim) -> x_hat float32 (B, H, W, 3)."""
        return self.decoder(self.post_quant_conv(z_q), train=train)[0]

    def decode_ids(self, ids: jax.Array) -> jax.Array:
        """ids: int (B, h, w) -> x_hat float32 (B, H, W, 3) (eval mode)."""
        return self.decode(self.quantize.embed(ids), train=False)

    def reconstruct(self, x: jax.Array) -> jax.Array:
        """x: (B, H, W, 3) -> x_hat float32 (B, H, W, 3) (eval mode)."""
        return self(x, train=False)[0]

    def reconstruct_with_ids(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: (B, H, W, 3) -> (x_hat float32 (B, H, W, 3), code ids int32 (B, h, w)) (eval mode)."""
        x_hat, aux = self(x, train=False)
        return x_hat, aux["indices"]


def _positive_ints(name: str, values: Sequence[int], allow_empty: bool = False) -> tuple[int, ...]:
    values = tuple(int(v) for v in values)
    if (not values and not allow_empty) or any(v <= 0 for v in values):
        raise UserError(f"model.{name} must be a {'' if allow_empty else 'non-empty '}tuple of positive ints, "
                        f"got {values}")
    return values


def from_config(config: Any, **layers) -> VQGAN:
    """A VQGAN from the `model` and `quantizer` sections of a config (configs/base.py; ConfigDict or dict).

    layers: optional layer constructors (conv, norm, dropout_layer, upsample), e.g. a backend's
    (`vqgan_jax.backends.vqgan_layers`); flax's own layers by default.
    """
    model_cfg, quantizer_cfg = config["model"], config["quantizer"]
    for name in ("ch", "num_res_blocks", "z_channels"):
        if int(model_cfg[name]) <= 0:
            raise UserError(f"model.{name} must be positive, got {model_cfg[name]}")
    for name in ("num_codes", "code_dim"):
        if int(quantizer_cfg[name]) <= 0:
            raise UserError(f"quantizer.{name} must be positive, got {quantizer_cfg[name]}")
    if not 0.0 <= float(model_cfg["dropout"]) < 1.0:
        raise UserError(f"model.dropout must be in [0, 1), got {model_cfg['dropout']}")
    return VQGAN(
        ch=int(model_cfg["ch"]),
        ch_mult=_positive_ints("ch_mult", model_cfg["ch_mult"]),
        num_res_blocks=int(model_cfg["num_res_blocks"]),
        attn_resolutions=_positive_ints("attn_resolutions", model_cfg["attn_resolutions"], allow_empty=True),
        z_channels=int(model_cfg["z_channels"]),
        dropout=float(model_cfg["dropout"]),
        num_codes=int(quantizer_cfg["num_codes"]),
        code_dim=int(quantizer_cfg["code_dim"]),
        beta=float(quantizer_cfg["beta"]),
        l2_normalize=bool(quantizer_cfg["l2_normalize"]),
        ema=bool(quantizer_cfg["ema"]),
        ema_decay=float(quantizer_cfg["ema_decay"]),
        restart_threshold=float(quantizer_cfg["restart_threshold"]),
        usage_decay=float(quantizer_cfg["usage_decay"]),
        dtype=dtype_from_name(str(model_cfg["dtype"])),
        **layers,
    )
