"""DCGAN (Radford, Metz & Chintala 2016): a generator from a noise vector z by fractionally strided
convolutions, and a strided-convolution discriminator, both with BatchNorm. Plain Flax linen; the layer
constructors (`dense`, `conv`, `conv_transpose`, `norm`, `embed`) are injectable fields.

Layout for an S x S image (S a power of two, >= 8), with n = log2(S) - 2 upsamplings:

    Generator      z (B, z_dim) [+ class embedding] -> dense -> (B, 4, 4, ngf * 2^(n-1)) + BN + ReLU
                   -> (n - 1) x [convT 4x4 s2, channels halved, BN, ReLU] -> convT 4x4 s2 -> C, tanh
                   (64 px: 4 -> 8 -> 16 -> 32 -> 64 with ngf*8, *4, *2, *1 channels, as the paper)
    Discriminator  x (B, S, S, C) -> conv 4x4 s2 -> ndf, LeakyReLU 0.2 (no BatchNorm on the first layer)
                   -> (n - 1) x [conv 4x4 s2, channels doubled, BN, LeakyReLU 0.2] -> (B, 4, 4, ndf*2^(n-1))
                   -> conv 4x4 'VALID' -> one logit per image [+ projection of the class embedding]

The paper projects z with a dense layer and reshapes (the same as a 4x4 transposed conv from 1x1).
BatchNorm's running averages live in the `batch_stats` collection: `train=True` normalises with the
statistics of the batch it is given (the global batch under a sharded jit, since the mean over the
batch axis is then global) and returns updated averages when `batch_stats` is mutable; `train=False` uses
the stored averages, so a sample does not depend on the rest of its batch.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError

ModuleDef = Callable[..., nn.Module]
# DCGAN's initialisation: weights N(0, 0.02), BatchNorm scales N(1, 0.02).
INIT = nn.initializers.normal(0.02)


def _scale_init(key, shape, dtype=jnp.float32):
    return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def num_upsamplings(image_size: int) -> int:
    """log2(image_size) - 2 (a 4x4 start); raises UserError unless image_size is a power of two >= 8."""
    n = int(round(math.log2(image_size))) if image_size > 0 else 0
    if image_size < 8 or 2 ** n != image_size:
        raise UserError(f"DCGAN needs data.image_size to be a power of two >= 8 (e.g. 32 or 64), "
                        f"got {image_size}")
    return n - 2


def batch_norm(norm: ModuleDef, name: str, train: bool) -> nn.Module:
    """BatchNorm with PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5) and DCGAN's init."""
    return norm(use_running_average=not train, momentum=0.9, epsilon=1e-5, scale_init=_scale_init, name=name)


class Generator(nn.Module):
    """z: float32 (B, z_dim), labels: int32 (B,) or None -> images float32 (B, S, S, channels) in [-1, 1].

    num_classes > 0 makes it class-conditional: an `embed_dim` embedding of the label is concatenated to z.
    """
    image_size: int = 64
    channels: int = 3
    ngf: int = 64
    num_classes: int = 0
    embed_dim: int = 50
    dense: ModuleDef = nn.Dense
    conv_transpose: ModuleDef = nn.ConvTranspose
    norm: ModuleDef = nn.BatchNorm
    embed: ModuleDef = nn.Embed

    @nn.compact
    def __call__(self, z: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        n = num_upsamplings(self.image_size)
        h = z.astype(jnp.float32)
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a class-conditional generator needs labels")
            e = self.embed(self.num_classes, self.embed_dim, embedding_init=INIT, name="label_embed")(labels)
            h = jnp.concatenate([h, e], axis=-1)                               # (B, z_dim + embed_dim)
        width = self.ngf * 2 ** (n - 1)
        h = self.dense(4 * 4 * width, use_bias=False, kernel_init=INIT, name="project")(h)
        h = h.reshape(h.shape[0], 4, 4, width)                                 # (B, 4, 4, ngf * 2^(n-1))
        h = nn.relu(batch_norm(self.norm, "bn_0", train)(h))
        for i in range(1, n):
            width //= 2
            # Convs followed by BatchNorm have no bias: the norm's shift replaces it.
            h = self.conv_transpose(width, (4, 4), strides=(2, 2), padding="SAME", use_bias=False,
                                    kernel_init=INIT, name=f"convt_{i}")(h)   # spatial x2
            h = nn.relu(batch_norm(self.norm, f"bn_{i}", train)(h))
        h = self.conv_transpose(self.channels, (4, 4), strides=(2, 2), padding="SAME", kernel_init=INIT,
                                name="convt_out")(h)                            # (B, S, S, channels)
        return jnp.tanh(h)


class Discriminator(nn.Module):
    """x: float (B, S, S, channels) in [-1, 1], labels: int32 (B,) or None -> logits float32 (B,).

    num_classes > 0 adds a projection term (Miyato & Koyama 2018): <embed(label), sum of the 4x4 features>.
    """
    image_size: int = 64
    ndf: int = 64
    num_classes: int = 0
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.BatchNorm
    embed: ModuleDef = nn.Embed

    @nn.compact
    def __call__(self, x: jax.Array, labels: jax.Array | None = None, *, train: bool = False) -> jax.Array:
        n = num_upsamplings(self.image_size)
        h = self.conv(self.ndf, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=INIT,
                      name="conv_0")(x.astype(jnp.float32))                     # (B, S/2, S/2, ndf)
        h = nn.leaky_relu(h, 0.2)
        width = self.ndf
        for i in range(1, n):
            width *= 2
            h = self.conv(width, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                          kernel_init=INIT, name=f"conv_{i}")(h)                # spatial /2
            h = nn.leaky_relu(batch_norm(self.norm, f"bn_{i}", train)(h), 0.2)
        # h: (B, 4, 4, ndf * 2^(n-1))
        logits = self.conv(1, (4, 4), padding="VALID", kernel_init=INIT, name="conv_out")(h)
        logits = logits.reshape(h.shape[0])                                    # (B,)
        if self.num_classes > 0:
            if labels is None:
                raise ValueError("a class-conditional discriminator needs labels")
            e = self.embed(self.num_classes, width, embedding_init=INIT, name="label_embed")(labels)  # (B, C)
            logits = logits + jnp.sum(e * jnp.sum(h, axis=(1, 2)), axis=-1)
        return logits.astype(jnp.float32)


def _sizes(config) -> dict:
    m = config.model
    num_classes = int(config.data.num_classes) if m.conditional else 0
    if m.conditional and num_classes <= 0:
        raise UserError("model.conditional=True needs labelled data (data.num_classes is 0): "
                        "use a labelled data set or set --config.model.conditional=False")
    return {"image_size": int(config.data.image_size), "num_classes": num_classes}


def from_config(config: Any, **layers) -> Generator:
    """The generator of a DCGAN config (model.ngf, model.embed_dim, data.image_size, data.channels,
    data.num_classes when model.conditional). layers: optional constructors dense / conv_transpose / norm /
    embed (others are ignored)."""
    keep = {k: v for k, v in layers.items() if k in ("dense", "conv_transpose", "norm", "embed")}
    return Generator(channels=int(config.data.channels), ngf=int(config.model.ngf),
                     embed_dim=int(config.model.embed_dim), **_sizes(config), **keep)


def discriminator_from_config(config: Any, **layers) -> Discriminator:
    """The discriminator of a DCGAN config (model.ndf, data.image_size, data.num_classes when conditional)."""
    keep = {k: v for k, v in layers.items() if k in ("conv", "norm", "embed")}
    return Discriminator(ndf=int(config.model.ndf), **_sizes(config), **keep)
