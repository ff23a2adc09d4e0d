"""Images from a run's latent-diffusion prior: noise -> denoised stage-1 latents -> the stage-1 decoder.

    generate(workdir, num, seed, batch_size, sampler='dpmpp2m', steps=25, eta=0.0, label=None,
             cfg_scale=1.0) -> uint8 (num, H, W, 3)

Everything is rebuilt from the run folder: DIR/diffusion/{config.json, layout.json, checkpoints/} (EMA
weights only) and the stage-1 latent source (`train.latent_source`). `make_sampler` jits one program per
(denoiser, sampler, steps, batch, guided or not); weights, noise, labels, eta and the guidance scale are
its arguments, so repeated calls (and every batch of one call) never recompile.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax import backends
from vqgan_jax.errors import UserError
from vqgan_jax.losses import diffusion as dl
from vqgan_jax.models import denoisers
from vqgan_jax.sampling import diffusion as samplers
from vqgan_jax.train import latent_source, parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like
from vqgan_jax.viz import images as images_lib


def layout_path(workdir: str) -> str:
    return os.path.join(runs.stage_dir(workdir, "diffusion"), "layout.json")


def read_layout(workdir: str) -> dict:
    """DIR/diffusion/layout.json: {source, kind, shape [h, w, c], scale, std, num_classes, class_names, stage_step}."""
    path = layout_path(workdir)
    if not os.path.exists(path):
        raise UserError(f"no diffusion prior in {runs.stage_dir(workdir, 'diffusion')}: train one with "
                        f"python train.py --config ... --workdir {workdir} --stage diffusion")
    with open(path) as f:
        return json.load(f)


def build_denoiser(cfg, layout: dict, ops: str, mesh=None):
    """The denoiser module of a diffusion config section and layout, with the backend's conv layers (mesh:
    the training mesh, see `backends.vqgan_layers`)."""
    layers = backends.vqgan_layers(ops, mesh=mesh) if str(cfg["model"]) == "unet" else {}
    return denoisers.from_config(cfg, channels=int(layout["shape"][-1]), num_classes=int(layout["num_classes"]),
                                 **layers)


def init_params_shapes(model, layout: dict):
    """jax.ShapeDtypeStruct tree of the denoiser's params."""
    h, w, c = layout["shape"]
    return jax.eval_shape(lambda r: model.init(r, jnp.zeros((1, h, w, c)), jnp.zeros((1,), jnp.int32),
                                               jnp.zeros((1,), jnp.int32))["params"], jax.random.PRNGKey(0))


@functools.lru_cache(maxsize=8)
def _denoiser_and_schedule(cfg_json: str, layout_json: str, ops: str):
    """(module, Schedule) for a diffusion config section and layout (JSON strings), the same objects for
    the same run: `make_sampler`'s cache (and so the compiled sampler) is keyed by them."""
    cfg = json.loads(cfg_json)
    model = build_denoiser(cfg, json.loads(layout_json), ops)
    return model, dl.make_schedule(cfg["schedule"], int(cfg["timesteps"]), float(cfg["schedule_shift"]))


@dataclasses.dataclass(frozen=True)
class LoadedDiffusion:
    """A trained diffusion prior: module, EMA params (replicated), schedule, objective, layout, config."""
    config: object
    model: object
    params: dict
    schedule: dl.Schedule
    objective: str
    layout: dict
    step: int
    mesh: object


def load(workdir: str, mesh=None, ops: str | None = None) -> LoadedDiffusion:
    """DIR/diffusion's denoiser with its EMA weights (never the optimizer state)."""
    layout = read_layout(workdir)
    runs.require_checkpoint(workdir, "diffusion",
                            f"train it with python train.py ... --workdir {workdir} --stage diffusion")
    config = runs.read_config(workdir, "diffusion")
    cfg = config.diffusion
    mesh = mesh if mesh is not None else parallel.make_mesh()
    ops = backends.resolve(ops or config.ops, mesh.devices.flat)
    model, schedule = _denoiser_and_schedule(json.dumps(cfg.to_dict(), sort_keys=True),
                                             json.dumps(layout, sort_keys=True), ops)
    shapes = init_params_shapes(model, layout)
    with Checkpointer(runs.checkpoint_dir(workdir, "diffusion"), async_save=False) as ckpt:
        step = ckpt.latest_step()
        restored = ckpt.restore_parts(abstract_like({"ema_params": shapes}, parallel.replicated(mesh)), step)
    return LoadedDiffusion(config, model, restored["ema_params"], schedule, cfg.objective, layout, int(step), mesh)


@functools.lru_cache(maxsize=16)
def make_sampler(model, schedule: dl.Schedule, objective: str, *, sampler: str, steps: int, guided: bool,
                 null_label: int):
    """A jitted `fn(params, noise float32 (B, h, w, c), key, labels int32 (B,), eta, cfg_scale) -> x_0
    float32 (B, h, w, c)` (in the model's scaled latent space). guided: classifier-free guidance with
    `cfg_scale` (one forward of 2B); otherwise cfg_scale is ignored. Checks sampler and steps first."""
    samplers.timesteps(schedule.num_steps, steps)
    if sampler not in samplers.SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: use one of {', '.join(samplers.SAMPLERS)}")

    def fn(params, noise, key, labels, eta, cfg_scale):
        apply = lambda x, t, y: model.apply({"params": params}, x, t, y, train=False)
        denoise = samplers.model_denoiser(apply, objective, schedule, labels=labels, null_label=null_label,
                                          cfg_scale=cfg_scale if guided else None)
        return samplers.sample(denoise, schedule, noise, key, sampler=sampler, steps=steps, eta=eta)

    return jax.jit(fn)


def sample_latents(loaded: LoadedDiffusion, noise: jax.Array, key: jax.Array, *, sampler: str, steps: int,
                   eta: float = 0.0, labels=None, cfg_scale: float = 1.0) -> np.ndarray:
    """Unscaled stage-1 latents float32 (B, h, w, c) from noise (B, h, w, c). labels: int (B,) or None
    (the null class: unconditional)."""
    n_cls = int(loaded.layout["num_classes"])
    guided = labels is not None and float(cfg_scale) != 1.0
    fn = make_sampler(loaded.model, loaded.schedule, loaded.objective, sampler=sampler, steps=int(steps),
                      guided=guided, null_label=n_cls)
    y = jnp.full((noise.shape[0],), n_cls, jnp.int32) if labels is None else jnp.asarray(labels, jnp.int32)
    z = fn(loaded.params, noise, key, y, jnp.float32(eta), jnp.float32(cfg_scale))
    return np.asarray(z) / float(loaded.layout["scale"])


def check_label(layout: dict, label) -> None:
    n_cls = int(layout["num_classes"])
    if label is not None and n_cls == 0:
        raise UserError("this diffusion prior is unconditional: leave out --label")
    if label is not None and not 0 <= int(label) < n_cls:
        raise UserError(f"--label must be in 0..{n_cls - 1}, got {label}")


def generate(workdir: str, num: int, seed: int = 0, batch_size: int = 16, sampler: str = "dpmpp2m",
             steps: int = 25, eta: float = 0.0, label: int | None = None, cfg_scale: float = 1.0,
             progress: bool = False) -> np.ndarray:
    """`num` images uint8 (num, H, W, 3) from the run's diffusion prior, decoded by its stage 1.

    sampler, steps, eta, cfg_scale: None takes the run's default (diffusion.sampler, sample_steps, eta,
    cfg_scale). Batch i starts from the noise of fold_in(PRNGKey(seed), i): the same seed gives the same images.
    Batches are always full (the last is cut), so one compiled sampler serves every batch.
    """
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    if batch_size <= 0:
        raise UserError(f"--batch_size must be positive, got {batch_size}")
    if cfg_scale is not None and float(cfg_scale) != 1.0 and label is None:
        raise UserError("--cfg_scale needs --label (classifier-free guidance steers towards a class)")
    loaded = load(workdir)
    d = loaded.config.diffusion  # None: the run's defaults (diffusion.sampler, sample_steps, eta, cfg_scale)
    sampler = d.sampler if sampler is None else sampler
    steps = int(d.sample_steps if steps is None else steps)
    eta = float(d.eta if eta is None else eta)
    cfg_scale = float(d.cfg_scale if cfg_scale is None else cfg_scale) if label is not None else 1.0
    check_label(loaded.layout, label)
    samplers.timesteps(loaded.schedule.num_steps, int(steps))   # a bad --steps fails before any work
    source = latent_source.load(workdir, loaded.layout["source"], loaded.layout["kind"], loaded.mesh)
    return draw_images(loaded, source, num, seed=seed, batch_size=batch_size, sampler=sampler, steps=steps, eta=eta,
                       label=label, cfg_scale=cfg_scale, progress=progress)


def draw_images(loaded: LoadedDiffusion, source, num: int, *, seed: int, batch_size: int, sampler: str, steps: int,
                eta: float = 0.0, label: int | None = None, cfg_scale: float = 1.0,
                progress: bool = False) -> np.ndarray:
    """`generate`'s sampling loop on an already loaded prior and latent source (`train.latent_source`):
    uint8 (num, H, W, 3). For callers that draw many times (benchmarks) without reloading."""
    key = jax.random.PRNGKey(seed)
    shape = tuple(loaded.layout["shape"])
    batches = range(0, num, batch_size)
    if progress:
        from tqdm import tqdm
        batches = tqdm(batches, desc="sampling", unit="batch", total=len(batches))
    out = []
    for i, _ in enumerate(batches):
        k_noise, k_sample = jax.random.split(jax.random.fold_in(key, i))
        noise = jax.random.normal(k_noise, (batch_size, *shape), jnp.float32)
        labels = None if label is None else np.full((batch_size,), int(label))
        z = sample_latents(loaded, noise, k_sample, sampler=sampler, steps=steps, eta=eta, labels=labels,
                           cfg_scale=cfg_scale)
        out.append(images_lib.to_uint8(np.asarray(source.decode(jnp.asarray(z)))))
    return np.concatenate(out)[:num]


def write_samples(workdir: str, out_dir: str, *, num: int, **kwargs) -> list[str]:
    """`generate(workdir, num, **kwargs)` written as out_dir/sample_NNNNN.png + out_dir/grid.png."""
    x = generate(workdir, num, progress=True, **kwargs)
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(x):
        paths.append(os.path.join(out_dir, f"sample_{i:05d}.png"))
        images_lib.save_png(paths[-1], image)
    images_lib.write_grid(x, os.path.join(out_dir, "grid.png"))
    return paths
