"""The variational autoencoder: the VQGAN's convolutional Encoder and Decoder (`models.vqgan`, built from the
shared `nn/` blocks) around a diagonal-Gaussian latent, and `from_config` to build it from a config's
`model` section.

Two latent shapes:
  vector   latent_dim > 0: encoder grid (B, H/f, W/f, z_channels) -> flatten -> Dense -> mean, log-variance
           (B, latent_dim) (the reference study's 256); the decoder starts with Dense -> the grid.
  spatial  latent_dim = 0: mean, log-variance (B, H/f, W/f, z_channels) straight from the encoder's grid,
           the shape a latent-diffusion prior needs (`encode_latents` / `decode_latents`).
f = 2**(len(ch_mult)-1). A class-conditional VAE (num_classes > 0) gets a learned class embedding as extra
input channels of the encoder and extra latent features of the decoder.

Images are float32 (B, H, W, out_channels) in [-1, 1]. The decoder's raw output is logits of
p = (x + 1) / 2 for the Bernoulli likelihood and the image itself for the Gaussian / Laplace ones;
`decode_latents` and `reconstruct` always return images.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.models.vqgan import Decoder, Encoder
from vqgan_jax.nn.layers import ModuleDef, Upsample, dtype_from_name

Dtype = Any
LIKELIHOODS = ("bernoulli", "gaussian", "laplace")  # reconstruction losses BCE, L2, L1
LOGVAR_RANGE = (-30.0, 20.0)  # keeps exp(logvar) finite in float32 early in training


def output_to_image(out: jax.Array, likelihood: str) -> jax.Array:
    """The decoder's raw output -> images float32 in [-1, 1] (Bernoulli: 2 sigmoid(logits) - 1)."""
    out = out.astype(jnp.float32)
    return 2.0 * jax.nn.sigmoid(out) - 1.0 if likelihood == "bernoulli" else out


class VAE(nn.Module):
    """Encoder -> (mean, logvar) -> z = mean + exp(logvar / 2) * temperature * eps -> Decoder.

    Call `apply(variables, x, label, train=True, rngs={'latent': key})` for a training forward; the other
    methods (`encode_latents`, `decode_latents`, `reconstruct`) by `apply(..., method=VAE.name)`.
    label: int (B,) class ids, ignored when num_classes == 0.
    """
    image_size: int = 64
    ch: int = 64
    ch_mult: Sequence[int] = (1, 2, 2)
    num_res_blocks: int = 1
    attn_resolutions: Sequence[int] = ()
    z_channels: int = 8
    latent_dim: int = 256
    num_classes: int = 0
    class_dim: int = 16
    likelihood: str = "bernoulli"
    out_channels: int = 3
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    conv: ModuleDef = nn.Conv
    norm: ModuleDef = nn.GroupNorm
    dropout_layer: ModuleDef = nn.Dropout
    upsample: ModuleDef = Upsample

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent: (latent_dim,) or (H/f, W/f, z_channels)."""
        return (self.latent_dim,) if self.latent_dim > 0 else (self.grid, self.grid, self.z_channels)

    def setup(self):
        arch = dict(ch=self.ch, ch_mult=tuple(self.ch_mult), num_res_blocks=self.num_res_blocks,
                    attn_resolutions=tuple(self.attn_resolutions), dropout=self.dropout, dtype=self.dtype,
                    conv=self.conv, norm=self.norm, dropout_layer=self.dropout_layer)
        spatial = self.latent_dim == 0
        # Spatial latents: the encoder's last conv gives mean and log-variance as 2 * z_channels channels.
        self.encoder = Encoder(z_channels=2 * self.z_channels if spatial else self.z_channels, **arch)
        self.decoder = Decoder(z_channels=self.z_channels, out_channels=self.out_channels, upsample=self.upsample,
                               **arch)
        if not spatial:
            self.to_moments = nn.Dense(2 * self.latent_dim, name="to_moments")
            self.from_latent = nn.Dense(self.grid * self.grid * self.z_channels, name="from_latent")
        if self.num_classes > 0:
            self.class_embed = nn.Embed(self.num_classes, self.class_dim, name="class_embed")

    def _class_maps(self, label: jax.Array, h: int, w: int) -> jax.Array:
        """label int (B,) -> the class embedding broadcast to (B, h, w, class_dim)."""
        e = self.class_embed(label.astype(jnp.int32))  # (B, class_dim)
        return jnp.broadcast_to(e[:, None, None, :], (e.shape[0], h, w, e.shape[-1]))

    def encode_latents(self, x: jax.Array, label: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """x: float32 (B, H, W, C) in [-1, 1], label int (B,) -> (mean, logvar), float32 (B, *latent_shape)."""
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            raise UserError(f"the VAE was built for {self.image_size}x{self.image_size} images, got "
                            f"{x.shape[1]}x{x.shape[2]}")
        if self.num_classes > 0:
            x = jnp.concatenate([x, self._class_maps(label, x.shape[1], x.shape[2]).astype(x.dtype)], axis=-1)
        h = self.encoder(x, train=train)  # float32 (B, h, w, z_channels or 2 z_channels)
        if self.latent_dim > 0:
            h = self.to_moments(h.reshape(h.shape[0], -1))  # (B, 2 latent_dim)
        mean, logvar = jnp.split(h.astype(jnp.float32), 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode_output(self, z: jax.Array, label: jax.Array, *, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """z: (B, *latent_shape) -> (raw output float32 (B, H, W, out_channels), h_last float32 (B, H, W,
        ch*ch_mult[0]), the input of the decoder's last conv (the VAE-GAN's adaptive weight needs it))."""
        if self.latent_dim > 0:
            if self.num_classes > 0:
                z = jnp.concatenate([z, self.class_embed(label.astype(jnp.int32)).astype(z.dtype)], axis=-1)
            z = self.from_latent(z).reshape(z.shape[0], self.grid, self.grid, self.z_channels)
        elif self.num_classes > 0:
            z = jnp.concatenate([z, self._class_maps(label, z.shape[1], z.shape[2]).astype(z.dtype)], axis=-1)
        return self.decoder(z, train=train)

    def decode_latents(self, z: jax.Array, label: jax.Array) -> jax.Array:
        """z: (B, *latent_shape), label int (B,) -> images float32 (B, H, W, out_channels) in [-1, 1] (eval mode)."""
        return output_to_image(self.decode_output(z, label, train=False)[0], self.likelihood)

    def __call__(self, x: jax.Array, label: jax.Array, *, train: bool,
                 sample: bool = True) -> tuple[jax.Array, dict[str, jax.Array]]:
        """x: float32 (B, H, W, C) in [-1, 1] -> (raw output float32 (B, H, W, C), aux).

        aux: 'mean', 'logvar', 'z' float32 (B, *latent_shape); 'h_last' (see decode_output). sample=True
        draws z = mean + exp(logvar / 2) * eps with eps from the 'latent' rng (the reparameterisation
        trick); False decodes the mean.
        """
        mean, logvar = self.encode_latents(x, label, train=train)
        z = mean
        if sample:
            eps = jax.random.normal(self.make_rng("latent"), mean.shape, jnp.float32)
            z = mean + jnp.exp(0.5 * logvar) * eps
        out, h_last = self.decode_output(z, label, train=train)
        return out, {"mean": mean, "logvar": logvar, "z": z, "h_last": h_last}

    def reconstruct(self, x: jax.Array, label: jax.Array) -> jax.Array:
        """x: (B, H, W, C) -> the decoded posterior mean, images float32 (B, H, W, C) in [-1, 1] (eval mode)."""
        mean, _ = self.encode_latents(x, label)
        return self.decode_latents(mean, label)


def from_config(config: Any, **layers) -> VAE:
    """A VAE from a config's `model` section (configs/vae/*.py) and data.image_size / data.num_classes.

    layers: optional layer constructors (conv, norm, dropout_layer, upsample), e.g. a backend's.
    """
    m, data = config["model"], config["data"]
    for name in ("ch", "num_res_blocks", "z_channels"):
        if int(m[name]) <= 0:
            raise UserError(f"model.{name} must be positive, got {m[name]}")
    if int(m["latent_dim"]) < 0:
        raise UserError(f"model.latent_dim must be >= 0 (0: a spatial latent), got {m['latent_dim']}")
    if str(m["likelihood"]) not in LIKELIHOODS:
        raise UserError(f"unknown model.likelihood {m['likelihood']!r}: use one of {', '.join(LIKELIHOODS)}")
    ch_mult = tuple(int(v) for v in m["ch_mult"])
    size = int(data["image_size"])
    if not ch_mult or any(v <= 0 for v in ch_mult) or size % 2 ** (len(ch_mult) - 1):
        raise UserError(f"model.ch_mult={ch_mult} must be positive ints whose downsampling 2**{len(ch_mult) - 1} "
                        f"divides data.image_size={size}")
    num_classes = int(data["num_classes"]) if bool(m["conditional"]) else 0
    return VAE(
        image_size=size, ch=int(m["ch"]), ch_mult=ch_mult, num_res_blocks=int(m["num_res_blocks"]),
        attn_resolutions=tuple(int(v) for v in m["attn_resolutions"]), z_channels=int(m["z_channels"]),
        latent_dim=int(m["latent_dim"]), num_classes=num_classes, class_dim=int(m["class_dim"]),
        likelihood=str(m["likelihood"]), out_channels=int(m["out_channels"]), dropout=float(m["dropout"]),
        dtype=dtype_from_name(str(m["dtype"])), **layers)
