"""Loading a run folder's parts for inference: the model and its weights, nothing else.

One loader per part, used by `sample.py`, evaluation and token encoding:

    load_vqgan(workdir)    DIR/vqgan: the autoencoder with its EMA weights (when the run keeps them) and
                           quantizer statistics; never the optimizer moments or the discriminator
    load_prior(workdir)    DIR/prior: the GPT-2, its parameters and its token layout
    load_vae(workdir)      DIR/vae: the VAE with its EMA weights (when kept), never the discriminator

Each rebuilds its model from the part's config.json (the run folder is self-describing) with the layers
`config.ops` picks for the devices here (`vqgan_jax.backends`), so a run trained on a GPU samples on a CPU
and the reverse: the parameter trees are the same.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from vqgan_jax import backends, models
from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.errors import UserError
from vqgan_jax.train import parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A trained part, ready for `model.apply(variables, ...)`.

    config: the part's config (from its config.json). model: the Flax module. variables: {'params': ...,
    plus the module's other collections (e.g. 'vq_stats')}, replicated over `mesh`. step: the checkpoint's
    step. ops: the layers it computes with ('plain' | 'xla_cpu').
    """
    config: ml_collections.ConfigDict
    model: Any
    variables: dict
    step: int
    ops: str
    mesh: Any

    def run(self, method: str, *arrays):
        """`model.apply(variables, *arrays, method=method)`, jitted (compiled once per method and shapes)."""
        return _jitted(self.model, method)(self.variables, *arrays)


@functools.lru_cache(maxsize=16)
def _jitted(model, method: str):
    return jax.jit(lambda variables, *arrays: model.apply(variables, *arrays, method=getattr(type(model), method)))


_VQGAN_HINT = "train stage 1 first: python train.py --config ... --workdir {workdir}"


def _restore(workdir: str, part: str, abstract: dict) -> tuple[dict, int]:
    """The newest intact checkpoint's entries named by `abstract` (a damaged newer step is skipped with a
    warning and left where it is: inference never changes a run folder)."""
    with Checkpointer(runs.checkpoint_dir(workdir, part), async_save=False) as ckpt:
        found = ckpt.restore_latest(abstract, parts=True)
    if found is None:
        raise UserError(f"no {part} checkpoint in {runs.checkpoint_dir(workdir, part)}")
    restored, step = found
    return restored, int(step)


def load_vqgan(workdir: str, mesh=None, ops: str | None = None) -> Loaded:
    """DIR/vqgan's autoencoder: EMA weights when the run keeps them (optim.ema_decay > 0), else the
    trained weights, and the quantizer's statistics. ops: override the run's config.ops ('auto' |
    'plain' | 'xla_cpu')."""
    runs.require_checkpoint(workdir, "vqgan", _VQGAN_HINT.format(workdir=workdir))
    config = runs.read_config(workdir, "vqgan")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    ops = backends.resolve(ops or config.ops, mesh.devices.flat)
    model = models.get(config.model.name).from_config(config, **backends.vqgan_layers(ops))
    size = int(config.data.image_size)
    shapes = jax.eval_shape(lambda r: model.init({"params": r, "vq": r, "dropout": r},
                                                 jnp.zeros((1, size, size, 3), jnp.float32), train=False),
                            jax.random.PRNGKey(0))
    params_key = "ema_params" if float(config.optim.ema_decay) > 0 else "g_params"
    abstract = {params_key: shapes["params"]}
    if shapes.get("vq_stats"):
        abstract["vq_stats"] = shapes["vq_stats"]
    restored, step = _restore(workdir, "vqgan", abstract_like(abstract, parallel.replicated(mesh)))
    variables = {"params": restored[params_key], **({"vq_stats": restored["vq_stats"]} if "vq_stats" in restored
                                                     else {})}
    return Loaded(config, model, variables, step, ops, mesh)


@dataclasses.dataclass(frozen=True)
class LoadedPrior(Loaded):
    """A trained GPT-2 prior: `Loaded` plus its token layout (PriorTokens) and layout.json (grid, classes)."""
    tokens: PriorTokens = None
    layout: dict = None


def gpt2_config_path(workdir: str) -> str:
    return os.path.join(runs.stage_dir(workdir, "prior"), "gpt2_config.json")


def prior_layout_path(workdir: str) -> str:
    return os.path.join(runs.stage_dir(workdir, "prior"), "layout.json")


def read_prior_layout(workdir: str):
    """(PriorTokens, transformers.GPT2Config, layout dict) saved by the prior's trainer."""
    from transformers import GPT2Config
    path = prior_layout_path(workdir)
    if not os.path.exists(path) or not os.path.exists(gpt2_config_path(workdir)):
        raise UserError(f"no prior in {runs.stage_dir(workdir, 'prior')}: train one with "
                        f"python train.py --config ... --workdir {workdir} --stage prior")
    with open(path) as f:
        layout = json.load(f)
    tokens = PriorTokens(num_codes=layout["num_codes"], num_classes=layout["num_classes"])
    return tokens, GPT2Config.from_json_file(gpt2_config_path(workdir)), layout


def load_prior(workdir: str, mesh=None, ops: str | None = None) -> LoadedPrior:
    """DIR/prior's GPT-2 (eval mode: dropout off when applied with train=False) and its parameters.
    ops: override the run's config.ops."""
    from vqgan_jax.models.gpt2 import GPT2LMHeadModel
    tokens, gpt2_config, layout = read_prior_layout(workdir)
    runs.require_checkpoint(workdir, "prior", f"train it with python train.py ... --workdir {workdir} --stage prior")
    config = runs.read_config(workdir, "prior")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    ops = backends.resolve(ops or config.ops, mesh.devices.flat)
    model = GPT2LMHeadModel(gpt2_config, **backends.gpt2_layers(ops))  # float32 compute for sampling
    shapes = jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, gpt2_config.n_positions), jnp.int32)),
                            jax.random.PRNGKey(0))
    restored, step = _restore(workdir, "prior", abstract_like({"params": shapes["params"]}, parallel.replicated(mesh)))
    return LoadedPrior(config, model, {"params": restored["params"]}, step, ops, mesh, tokens, layout)


_VAE_HINT = "train the VAE first: python train.py --config configs/vae/flowers64.py --workdir {workdir}"


def load_vae(workdir: str, mesh=None, ops: str | None = None) -> Loaded:
    """DIR/vae's VAE: its EMA weights when the run keeps them (optim.ema_decay > 0), else the trained
    weights; never the optimizer state or the VAE-GAN's discriminator. ops: override the run's config.ops."""
    runs.require_checkpoint(workdir, "vae", _VAE_HINT.format(workdir=workdir))
    config = runs.read_config(workdir, "vae")
    mesh = mesh if mesh is not None else parallel.make_mesh()
    ops = backends.resolve(ops or config.ops, mesh.devices.flat)
    model = models.get(config.model.name).from_config(config, **backends.vqgan_layers(ops))
    size, channels = int(config.data.image_size), int(config.model.out_channels)
    shapes = jax.eval_shape(lambda r: model.init({"params": r, "latent": r}, jnp.zeros((1, size, size, channels)),
                                                 jnp.zeros((1,), jnp.int32), train=False), jax.random.PRNGKey(0))
    params_key = "ema_params" if float(config.optim.ema_decay) > 0 else "params"
    restored, step = _restore(workdir, "vae", abstract_like({params_key: shapes["params"]}, parallel.replicated(mesh)))
    return Loaded(config, model, {"params": restored[params_key]}, step, ops, mesh)
