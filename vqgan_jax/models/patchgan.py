"""The PatchGAN discriminator (after taming's NLayerDiscriminator, pix2pix) without BatchNorm, and
`from_config` to build it from the `disc` config section. Plain Flax; `conv` and `norm` are injectable
layer constructors (see `vqgan_jax.nn.layers`).

BatchNorm is replaced by GroupNorm, a per-channel affine map, or nothing, so the discriminator has no mutable
batch statistics and its output for an image never depends on the rest of the batch. The affine map
('affine') is what a taming discriminator becomes on import: its BatchNorm in eval mode (running statistics
folded in) or its ActNorm, exactly (`vqgan_jax.interop.taming`).
"""
from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from vqgan_jax.errors import UserError
from vqgan_jax.nn.layers import ModuleDef, conv, dtype_from_name, normalize

Dtype = Any
NORMS = ("group", "none", "affine")


class ChannelAffine(nn.Module):
    """x * scale + bias per channel: x (..., C) -> (..., C) in `dtype`; params 'scale' (C,) ones, 'bias' (C,)
    zeros (the names GroupNorm's affine uses)."""
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],), jnp.float32)
        return (x * scale.astype(self.dtype) + bias.astype(self.dtype)).astype(self.dtype)


class PatchDiscriminator(nn.Module):
    """x: float (B, H, W, C) in [-1, 1] -> logits float32 (B, H', W', 1), one per overlapping patch.

    conv4x4 s2 + leaky_relu(0.2); (n_layers - 1) x [conv4x4 s2 (ndf * min(2^n, 8) channels) + norm + leaky];
    conv4x4 s1 + norm + leaky; conv4x4 s1 -> 1 channel; all with padding 1 (64px, n_layers 3 -> 6x6).
    Convs followed by a norm have no bias (the norm's own bias replaces it).
    """
    ndf: int = 64
    n_layers: int = 3
    norm: str = "group"
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm_layer: ModuleDef = nn.GroupNorm

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        del train  # no dropout or batch statistics: same function in train and eval
        if self.norm not in NORMS:
            raise UserError(f"unknown discriminator norm {self.norm!r}: use one of {NORMS}")
        pad = ((1, 1), (1, 1))
        use_norm = self.norm != "none"

        def block(h, features, stride, i):
            h = conv(self.conv, features, 4, self.dtype, f"conv_{i}", stride=stride, padding=pad,
                     use_bias=not use_norm)(h)
            if self.norm == "group":
                h = normalize(self.norm_layer, features, self.dtype, f"norm_{i}")(h)
            elif self.norm == "affine":
                h = ChannelAffine(self.dtype, name=f"norm_{i}")(h)
            return nn.leaky_relu(h, 0.2)

        h = nn.leaky_relu(conv(self.conv, self.ndf, 4, self.dtype, "conv_0", stride=2, padding=pad)(x), 0.2)
        for n in range(1, self.n_layers):
            h = block(h, self.ndf * min(2 ** n, 8), 2, n)
        h = block(h, self.ndf * min(2 ** self.n_layers, 8), 1, self.n_layers)
        logits = conv(self.conv, 1, 4, self.dtype, "conv_out", padding=pad)(h)
        return logits.astype(jnp.float32)


def from_config(config: Any, *, conv: ModuleDef = nn.Conv, norm: ModuleDef = nn.GroupNorm,
                **_unused_layers) -> PatchDiscriminator:
    """A PatchDiscriminator from a config's `disc` section (keys ndf, n_layers, norm), computing in the
    model's dtype (`model.dtype`). conv, norm: layer constructors (a backend's, or flax's); the other
    layer constructors of the autoencoder's set are ignored."""
    disc_cfg, dtype = config["disc"], dtype_from_name(str(config["model"]["dtype"]))
    kind = str(disc_cfg["norm"])
    if kind not in NORMS:
        raise UserError(f"unknown disc.norm {kind!r}: use one of {NORMS}")
    if int(disc_cfg["ndf"]) <= 0 or int(disc_cfg["n_layers"]) < 1:
        raise UserError(f"disc.ndf must be positive and disc.n_layers >= 1, got {disc_cfg['ndf']}, "
                        f"{disc_cfg['n_layers']}")
    return PatchDiscriminator(ndf=int(disc_cfg["ndf"]), n_layers=int(disc_cfg["n_layers"]), norm=kind, dtype=dtype,
                              conv=conv, norm_layer=norm)
