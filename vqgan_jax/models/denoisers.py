"""Denoisers for the latent-diffusion prior, found by name (config `diffusion.model`): 'unet' | 'dit'.

`from_config(diffusion_cfg, channels, num_classes, **layers)` builds one; every denoiser is called as
`model.apply(variables, x_t (B, h, w, C), t (B,), labels (B,) | None, train=...)` and returns
float32 (B, h, w, C). `layers` (conv, norm, dropout_layer, upsample from `vqgan_jax.backends`) reach the
U-Net; the DiT is Dense layers only and takes none.
"""
from typing import Any

from vqgan_jax.errors import UserError
from vqgan_jax.nn.layers import dtype_from_name

DENOISERS = ("unet", "dit")


def from_config(cfg: Any, *, channels: int, num_classes: int, **layers):
    """The denoiser named by cfg['model'] (the `diffusion` config section, ConfigDict or dict)."""
    name = str(cfg["model"])
    dtype = dtype_from_name(str(cfg["dtype"]))
    if name == "unet":
        from vqgan_jax.models.unet import UNet
        if int(cfg["ch"]) <= 0 or int(cfg["num_res_blocks"]) <= 0:
            raise UserError("diffusion.ch and diffusion.num_res_blocks must be positive")
        return UNet(out_channels=channels, ch=int(cfg["ch"]), ch_mult=tuple(int(m) for m in cfg["ch_mult"]),
                    num_res_blocks=int(cfg["num_res_blocks"]),
                    attn_resolutions=tuple(int(r) for r in cfg["attn_resolutions"]), num_classes=num_classes,
                    dropout=float(cfg["dropout"]), dtype=dtype, **layers)
    if name == "dit":
        from vqgan_jax.models.dit import DiT
        if int(cfg["dit_hidden"]) % int(cfg["dit_heads"]):
            raise UserError(f"diffusion.dit_hidden={cfg['dit_hidden']} is not divisible by "
                            f"diffusion.dit_heads={cfg['dit_heads']}")
        return DiT(out_channels=channels, patch_size=int(cfg["dit_patch"]), hidden=int(cfg["dit_hidden"]),
                   depth=int(cfg["dit_depth"]), num_heads=int(cfg["dit_heads"]), num_classes=num_classes,
                   dtype=dtype)
    raise UserError(f"unknown diffusion.model {name!r}: use one of {', '.join(DENOISERS)}")
