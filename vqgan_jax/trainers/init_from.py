"""Fine-tuning stage 1 from another run folder (`config.init_from`), e.g. one `python -m vqgan_jax.convert` made.

The network comes with the weights: `adopt_network` copies the source's `model`, `quantizer` and `disc`
sections into the config (the rest of the config, data, losses, optimisation and schedule, stays yours), and
`load_weights` puts the source's autoencoder, discriminator and quantizer statistics into a fresh step-0 state
(optimizer moments start at zero). Both run only when the new run has no checkpoint yet; after its first
save the run resumes from its own checkpoints like any other.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from vqgan_jax.errors import UserError
from vqgan_jax.train import parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like


def adopt_network(config, workdir: str) -> None:
    """Copies `model`, `quantizer`, `disc` from the run at config.init_from (or, when DIR/vqgan/config.json
    exists already, from that file: a resumed run keeps what it started with) into `config`."""
    source = str(config.init_from)
    own = runs.config_path(workdir, "vqgan")
    saved = runs.read_config_dict(workdir, "vqgan") if os.path.exists(own) else runs.read_config_dict(source, "vqgan")
    for section in runs.MODEL_SECTIONS["vqgan"]:
        for key, value in saved.get(section, {}).items():
            if key in config[section]:
                current = config[section][key]
                config[section][key] = tuple(value) if isinstance(current, tuple) else value


def load_weights(state, setup, source: str):
    """`state` (a fresh VQGANState of `setup`) with g_params, d_params, vq_stats (and ema_params when the new
    run keeps an EMA) from the latest checkpoint of `source`'s vqgan part."""
    runs.require_checkpoint(source, "vqgan", f"config.init_from={source} must be a run folder with a vqgan part")
    abstract = setup.abstract_state()
    parts = {"g_params": abstract.g_params, "d_params": abstract.d_params}
    if abstract.vq_stats:
        parts["vq_stats"] = abstract.vq_stats
    try:
        with Checkpointer(runs.checkpoint_dir(source, "vqgan"), async_save=False) as ckpt:
            restored = ckpt.restore_parts(abstract_like(parts, parallel.replicated(setup.mesh)))
    except UserError as e:
        raise UserError(f"config.init_from={source}: {e}; fine-tune at the source's data.image_size when its "
                        "attention placement depends on it") from None
    g = restored["g_params"]
    # The EMA starts as a copy in its own buffers: the step donates its state, and one buffer donated
    # twice (as g_params and as ema_params) crashes the call.
    return state.replace(g_params=g, d_params=restored["d_params"],
                         vq_stats=restored.get("vq_stats", state.vq_stats),
                         ema_params=jax.tree.map(jnp.copy, g) if setup.ema_decay > 0 else state.ema_params)
