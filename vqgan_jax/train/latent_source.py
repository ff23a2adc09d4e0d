"""Where a latent-diffusion prior's latents come from: a trained stage 1 that encodes and decodes.

A `LatentSource` is the whole interface the diffusion trainer and sampler use:

    source.encode(images float32 (B, H, W, 3) in [-1, 1]) -> latents float32 (B, h, w, c)   (jitted)
    source.decode(latents float32 (B, h, w, c))          -> images float32 (B, H, W, 3)      (jitted)
    source.latent_shape (h, w, c), source.step (the stage-1 checkpoint), source.name, source.kind

`load(workdir, name, kind)` picks the implementation by the stage-1 generator's name (config
`model.name`):
  'vqgan'  (`vqgan_source`): the continuous encoder output after quant_conv ('continuous', the quantizer's
           input) or the codebook vectors it snaps to ('quantized'); both decode through the quantizer
           (nearest code) and the decoder, the path the decoder was trained on.
  'vae'    (`vae_source`): a VAE with a spatial latent (model.latent_dim = 0): the posterior means
           (B, H/f, W/f, z_channels) ('continuous' only), decoded by its decoder (eval mode). A vector
           latent has no grid for the denoiser, and a class-conditional VAE would need the label at
           encode and decode time: both are refused with a line saying what to train instead.

`encode_training_set` caches the stage-1 training split's latents in DIR/latents (`data.latents`) with
the latent scale measured on them.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable

import jax
import numpy as np

from vqgan_jax import backends, models
from vqgan_jax.data import latents as latents_lib
from vqgan_jax.errors import UserError
from vqgan_jax.train import loading, parallel, runs

KINDS = ("continuous", "quantized")


@dataclasses.dataclass(frozen=True)
class LatentSource:
    """A stage 1 seen as (encode, decode); see the module docstring. config: the stage-1 config."""
    name: str
    kind: str
    step: int
    latent_shape: tuple
    config: object
    encode: Callable
    decode: Callable
    mesh: object


def latents_dir(workdir: str) -> str:
    return os.path.join(workdir, "latents")


@functools.lru_cache(maxsize=8)
def _vqgan_programs(config_json: str, kind: str, ops: str, mesh):
    """The jitted (encode, decode) of a stage-1 config (JSON), kind, layers and mesh, built once per process,
    so every later load of the same run reuses the compiled programs. Both take the variables first."""
    config = runs.with_defaults(json.loads(config_json))
    model = models.get(config["model"]["name"]).from_config(config, **backends.vqgan_layers(ops))

    def encode(variables, x):
        z = model.apply(variables, x, method=lambda m, x: m.quant_conv(m.encoder(x, train=False)))
        if kind == "quantized":
            z = model.apply(variables, z, method=lambda m, z: m.quantize(z, train=False)[0])
        return z.astype(np.float32)                                          # (B, h, w, code_dim)

    def decode(variables, z):
        return model.apply(variables, z, method=lambda m, z: m.decode(m.quantize(z, train=False)[0]))

    rep, bat = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(encode, in_shardings=(rep, bat), out_shardings=rep), jax.jit(decode)


def vqgan_source(workdir: str, kind: str, mesh=None) -> LatentSource:
    """DIR/vqgan as a latent source (EMA weights when the run keeps them)."""
    vq = loading.load_vqgan(workdir, mesh)
    enc, dec = _vqgan_programs(json.dumps(runs.config_to_dict(vq.config), sort_keys=True), kind, vq.ops, vq.mesh)
    size = int(vq.config.data.image_size)
    f = 2 ** (len(vq.config.model.ch_mult) - 1)
    shape = (size // f, size // f, int(vq.config.quantizer.code_dim))
    variables = vq.variables
    return LatentSource("vqgan", kind, vq.step, shape, vq.config, lambda x: enc(variables, x),
                        lambda z: dec(variables, z), vq.mesh)


@functools.lru_cache(maxsize=8)
def _vae_programs(config_json: str, ops: str, mesh):
    """The jitted (encode -> posterior mean, decode) of a VAE config (JSON), layers and mesh, built once per
    process. Both take the variables first."""
    config = runs.with_defaults(json.loads(config_json))
    model = models.get(config["model"]["name"]).from_config(config, **backends.vqgan_layers(ops))

    def encode(variables, x):
        label = np.zeros((x.shape[0],), np.int32)   # unconditional: the label is not read
        return model.apply(variables, x, label, method=lambda m, x, y: m.encode_latents(x, y)[0])

    def decode(variables, z):
        label = np.zeros((z.shape[0],), np.int32)
        return model.apply(variables, z, label, method=lambda m, z, y: m.decode_latents(z, y))

    rep, bat = parallel.replicated(mesh), parallel.batch_sharding(mesh)
    return jax.jit(encode, in_shardings=(rep, bat), out_shardings=rep), jax.jit(decode)


def vae_source(workdir: str, kind: str, mesh=None) -> LatentSource:
    """DIR/vae as a latent source (EMA weights when the run keeps them): posterior means in, decoder out."""
    model_cfg = runs.read_config(workdir, "vae").model   # refuse before restoring anything
    if int(model_cfg.latent_dim) > 0:
        raise UserError(f"the VAE in {workdir} has a vector latent ({model_cfg.latent_dim}-d); the diffusion "
                        "prior needs a spatial one: train the VAE with --config.model.latent_dim=0")
    vae = loading.load_vae(workdir, mesh)
    if vae.model.num_classes > 0:
        raise UserError(f"the VAE in {workdir} is class-conditional; the diffusion prior works over an "
                        "unconditional VAE (--config.model.conditional=False); it can be class-conditional "
                        "itself (diffusion.conditional)")
    if kind != "continuous":
        raise UserError(f"diffusion.latents={kind!r} is for a VQGAN; a VAE's latents are continuous: "
                        "use --config.diffusion.latents=continuous")
    if int(vae.config.model.out_channels) != 3:
        raise UserError("the diffusion prior over a VAE needs RGB images (model.out_channels=3)")
    enc, dec = _vae_programs(json.dumps(runs.config_to_dict(vae.config), sort_keys=True), vae.ops, vae.mesh)
    variables = vae.variables
    return LatentSource("vae", kind, vae.step, tuple(vae.model.latent_shape), vae.config,
                        lambda x: enc(variables, x).astype(np.float32), lambda z: dec(variables, z), vae.mesh)


# stage-1 generator name (config model.name) -> its latent source
SOURCES = {"vqgan": vqgan_source, "vae": vae_source}


def load(workdir: str, name: str, kind: str, mesh=None) -> LatentSource:
    """The latent source of stage 1 `name` in workdir, with latents of `kind` ('continuous' | 'quantized')."""
    if kind not in KINDS:
        raise UserError(f"unknown diffusion.latents {kind!r}: use one of {', '.join(KINDS)}")
    if name not in SOURCES:
        raise UserError(f"no latent source for the stage-1 model {name!r}: the diffusion prior supports "
                        f"{', '.join(sorted(SOURCES))}")
    return SOURCES[name](workdir, kind, mesh)


def encode_training_set(workdir: str, source: LatentSource, *, flip: bool, batch_size: int | None = None) -> dict:
    """Encodes stage 1's training split into DIR/latents (or reuses shards made from the same checkpoint,
    kind and flip). Returns the meta dict (with the measured `scale`)."""
    from vqgan_jax.data import pipeline  # tf.data only where data is read
    out = latents_dir(workdir)
    meta = latents_lib.read_meta(out)
    wanted = {"source": source.name, "kind": source.kind, "stage_step": int(source.step), "flip": bool(flip)}
    if meta is not None and all(meta.get(k) == v for k, v in wanted.items()):
        print(f"reusing {meta['count']} latents in {out} (made from {source.name} step {source.step})", flush=True)
        return meta
    for old in latents_lib.shard_paths(out, jax.process_index()):
        os.remove(old)
    if os.path.exists(latents_lib.meta_path(out)):
        os.remove(latents_lib.meta_path(out))
    mesh, data_cfg = source.mesh, source.config.data
    n_dev = mesh.devices.size
    bs = batch_size or max(n_dev, (64 // n_dev) * n_dev)
    ds = pipeline.make_dataset(data_cfg, split="train", global_batch_size=bs, seed=0, training=False,
                               process_index=jax.process_index(), process_count=jax.process_count(),
                               repeat=False)
    buf, buf_labels, shard, count = [], [], 0, 0
    total, total_sq = 0.0, 0.0

    def flush():
        nonlocal buf, buf_labels, shard
        latents_lib.save_shard(out, f"shard_{jax.process_index()}_{shard:05d}.npz", np.concatenate(buf),
                               np.concatenate(buf_labels))
        buf, buf_labels, shard = [], [], shard + 1

    for batch in pipeline.iterate_numpy(ds):
        g = parallel.global_batch(batch, mesh)
        views = [g["image"]] + ([g["image"][:, :, ::-1, :]] if flip else [])
        local = slice(jax.process_index() * len(batch["label"]), (jax.process_index() + 1) * len(batch["label"]))
        for x in views:
            z = np.asarray(jax.device_get(source.encode(x)))[local]
            buf.append(z)
            buf_labels.append(batch["label"])
            count += len(z)
            total += float(np.sum(z, dtype=np.float64))
            total_sq += float(np.sum(np.square(z, dtype=np.float64)))
        if sum(len(b) for b in buf) >= latents_lib.SHARD_SIZE:
            flush()
    if buf:
        flush()
    if count == 0:
        raise UserError(f"no training images were encoded (fewer than one batch of {bs}?)")
    n_values = count * int(np.prod(source.latent_shape))
    mean = total / n_values
    std = float(np.sqrt(max(total_sq / n_values - mean ** 2, 0.0)))
    if not std > 0:
        raise UserError("the encoded latents are constant (std 0): is stage 1 trained?")
    meta = {**wanted, "shape": list(source.latent_shape), "count": count, "mean": mean, "std": std,
            "scale": 1.0 / std, "num_classes": int(data_cfg.num_classes),
            "class_names": list(pipeline.dataset_info(data_cfg).get("class_names", []))}
    if jax.process_index() == 0:
        latents_lib.write_meta(out, meta)
    print(f"encoded {count} latents of {'x'.join(map(str, source.latent_shape))} into {out} "
          f"(std {std:.4g}, scale {1.0 / std:.4g})", flush=True)
    return meta
