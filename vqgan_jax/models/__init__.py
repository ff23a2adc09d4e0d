"""The networks, in plain Flax, found by name.

A config names its generator (`config.model.name`, e.g. 'vqgan'); `get(name)` returns the module that
defines it, whose `from_config(config, **layers)` builds it (big_vision's `models.<name>` habit), so a new
generator is a module and a config, not an `if model == ...` chain. `layers` are optional layer
constructors from `vqgan_jax.backends`; the defaults are flax's own.
"""
import importlib
import types

from vqgan_jax.errors import UserError

# Generators a config can name (config.model.name) -> module under vqgan_jax.models. The components
# their trainers add (the PatchGAN discriminator `patchgan`, the GPT-2 prior `gpt2`, the frozen
# `vgg16` and `inception` networks) are imported by module.
MODELS = {
    "vqgan": "vqgan",         # VQGAN autoencoder (taming layout) with its vector quantizer
    "dcgan": "dcgan",         # DCGAN generator (its discriminator: dcgan.discriminator_from_config)
    "vae": "vae",             # variational autoencoder (vector or spatial Gaussian latent)
}


def get(name: str) -> types.ModuleType:
    """The module of model `name` (it has `from_config`)."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r} (config model.name): use one of {sorted(MODELS)}")
    return importlib.import_module(f"vqgan_jax.models.{MODELS[name]}")
