"""The latent-diffusion prior's trainer (`train.py --stage diffusion`): encode stage 1's training set into
latents once (DIR/latents), then train a denoiser (U-Net or DiT) on them in DIR/diffusion.

It shares the mesh, the loop (logging, checkpoints, resume, SIGTERM save, NaN stop) and the run-folder
code with the other stages; only the step (`diffusion_train_step`) and the model wiring differ. The
latents come through `train.latent_source`, so any stage 1 with a latent source (the VQGAN today, a VAE
next) trains the same way.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqgan_jax import backends
from vqgan_jax.data import latents as latents_lib
from vqgan_jax.errors import UserError
from vqgan_jax.losses import diffusion as dl
from vqgan_jax.sampling import latent_diffusion
from vqgan_jax.train import latent_source, loop, optim, parallel, runs, setups
from vqgan_jax.train.checkpoint import abstract_like
from vqgan_jax.train.part import TrainingPart
from vqgan_jax.train.state import DiffusionState
from vqgan_jax.viz import images as images_lib


def diffusion_train_step(state: DiffusionState, batch: dict, rng: jax.Array, *, model, tx, schedule: dl.Schedule,
                         objective: str, min_snr_gamma: float, label_dropout: float, num_classes: int,
                         ema_decay: float, scale: float):
    """One denoising update.

    batch: {'latent': float (B, h, w, c) unscaled stage-1 latents, 'label': int32 (B,)}. x_0 = latent *
    scale; t ~ U{0..T-1}, eps ~ N(0, I), x_t = alpha_t x_0 + sigma_t eps; the network regresses eps or v
    (min-SNR weighted). Labels are replaced by the null class (num_classes) with prob. label_dropout.
    """
    x0 = batch["latent"].astype(jnp.float32) * scale
    b = x0.shape[0]
    r_t, r_eps, r_label, r_drop = jax.random.split(rng, 4)
    t = jax.random.randint(r_t, (b,), 0, schedule.num_steps)
    eps = jax.random.normal(r_eps, x0.shape, jnp.float32)
    alpha, sigma = schedule.coefficients(t)
    x_t = dl.q_sample(x0, eps, alpha, sigma)
    labels = None
    if num_classes > 0:
        drop = jax.random.bernoulli(r_label, label_dropout, (b,))
        labels = jnp.where(drop, num_classes, batch["label"].astype(jnp.int32))

    def loss_fn(params):
        out = model.apply({"params": params}, x_t, t, labels, train=True, rngs={"dropout": r_drop})
        return dl.diffusion_loss(objective, out, x0, eps, alpha, sigma, min_snr_gamma=min_snr_gamma)

    (loss, mse), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    if ema_decay > 0:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
    else:
        ema = params
    high = (t >= schedule.num_steps // 2).astype(jnp.float32)        # the noisier half of the timesteps
    metrics = {"loss": loss, "mse": jnp.mean(mse), "grad_norm": optax.global_norm(grads),
               "mse_high_noise": jnp.sum(mse * high) / jnp.maximum(jnp.sum(high), 1.0),
               "mse_low_noise": jnp.sum(mse * (1 - high)) / jnp.maximum(jnp.sum(1 - high), 1.0)}
    new = state.replace(step=state.step + 1, params=params, opt=opt, ema_params=ema)
    return new, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)


class DiffusionSetup:
    """Static pieces of a diffusion run: denoiser, schedule, optimizer, the jitted step."""

    def __init__(self, cfg, layout: dict, mesh=None, *, ops: str = "auto"):
        self.cfg = cfg
        self.layout = layout
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.ops = backends.resolve(ops, self.mesh.devices.flat)
        self.model = latent_diffusion.build_denoiser(cfg, layout, self.ops, self.mesh)
        self.schedule = dl.make_schedule(cfg.schedule, int(cfg.timesteps), float(cfg.schedule_shift))
        dl.check_objective(cfg.objective)
        self.tx = optim.adamw(cfg.lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                              warmup_steps=cfg.warmup_steps, total_steps=cfg.num_steps, grad_clip=cfg.grad_clip)
        step = functools.partial(
            diffusion_train_step, model=self.model, tx=self.tx, schedule=self.schedule, objective=cfg.objective,
            min_snr_gamma=float(cfg.min_snr_gamma), label_dropout=float(cfg.label_dropout),
            num_classes=int(layout["num_classes"]), ema_decay=float(cfg.ema_decay), scale=float(layout["scale"]))
        self.state_sharding = parallel.replicated(self.mesh)
        self.step = parallel.jit_step(step, self.mesh, self.state_sharding)

    @classmethod
    def shared(cls, cfg, layout: dict, mesh=None, ops: str = "auto") -> "DiffusionSetup":
        """One setup per (config, layout, ops, mesh) in a process (see `train.setups`)."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = (setups.config_key(cfg), json.dumps(layout, sort_keys=True), ops, setups.mesh_key(mesh))
        return setups.shared("diffusion", key, lambda: cls(cfg, layout, mesh, ops=ops))

    def _init(self, rng):
        h, w, c = self.layout["shape"]
        p = self.model.init(rng, jnp.zeros((1, h, w, c)), jnp.zeros((1,), jnp.int32),
                            jnp.zeros((1,), jnp.int32))["params"]
        return DiffusionState(step=jnp.zeros((), jnp.int32), params=p, opt=self.tx.init(p), ema_params=p)

    def init_state(self, seed: int) -> DiffusionState:
        return parallel.run_once_jitted(self._init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding,
                                        compiler_options=backends.init_compiler_options(self.ops))

    def abstract_state(self) -> DiffusionState:
        return abstract_like(jax.eval_shape(self._init, jax.random.PRNGKey(0)), self.state_sharding)


def latent_batches(latents: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int, start_step: int):
    """Endless per-process batches {'latent': float32 (b, h, w, c), 'label': int32 (b,)}; epoch e visits the
    rows in a permutation seeded by (seed, e), so the batch of step s is a pure function of s (resume)."""
    b = global_batch // jax.process_count()
    n = len(latents)
    if n < b:
        raise UserError(f"only {n} latents for a per-process batch of {b}: lower diffusion.batch_size")
    per_epoch = n // b
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        rows = np.random.default_rng([seed, epoch]).permutation(n)[k * b:(k + 1) * b]
        yield {"latent": latents[rows], "label": labels[rows].astype(np.int32)}
        step += 1


def layout_of(meta: dict, num_classes: int) -> dict:
    """What sampling needs besides the weights, from the latents' meta."""
    layout = {k: meta[k] for k in ("source", "kind", "shape", "scale", "std", "stage_step")}
    layout.update(num_classes=num_classes, class_names=meta.get("class_names", []) if num_classes else [])
    return layout


def write_layout(workdir: str, meta: dict, num_classes: int) -> dict:
    """Writes DIR/diffusion/layout.json (`layout_of`) and returns it."""
    layout = layout_of(meta, num_classes)
    if jax.process_index() == 0:
        os.makedirs(runs.stage_dir(workdir, "diffusion"), exist_ok=True)
        with open(latent_diffusion.layout_path(workdir), "w") as f:
            json.dump(layout, f, indent=2)
    return layout


def train(config, workdir: str) -> dict:
    """Trains (or resumes) the diffusion prior in DIR/diffusion on latents of DIR/<stage 1>."""
    cfg = config.diffusion
    loop.check_settings("diffusion", num_steps=cfg.num_steps, log_every=cfg.log_every, ckpt_every=cfg.ckpt_every,
                        keep_checkpoints=cfg.keep_checkpoints, image_every=cfg.image_every)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(cfg.batch_size, mesh)
    with TrainingPart(workdir, "diffusion", config, keep=cfg.keep_checkpoints, ckpt_every=cfg.ckpt_every,
                      label="the diffusion prior") as part:
        return _train(config, workdir, mesh, part)


def _train(config, workdir: str, mesh, part: TrainingPart) -> dict:
    out, cfg = part.dir, config.diffusion
    source = latent_source.load(workdir, config.model.name, str(cfg.latents), mesh)
    meta = latent_source.encode_training_set(workdir, source, flip=bool(cfg.flip_latents))
    latents, labels, meta = latents_lib.load_latents(latent_source.latents_dir(workdir), jax.process_index())
    num_classes = int(meta["num_classes"]) if cfg.conditional else 0
    layout = layout_of(meta, num_classes)
    setup = DiffusionSetup.shared(cfg, layout, mesh, ops=config.ops)
    state, start = part.start(setup.abstract_state, lambda: setup.init_state(cfg.seed))
    write_layout(workdir, meta, num_classes)  # after start(): config.json has accepted this network
    if start >= cfg.num_steps:
        print(f"diffusion prior already trained to step {start} (diffusion.num_steps={cfg.num_steps}); "
              "nothing to do", flush=True)
        return {}
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"diffusion: {cfg.model} ({n_params / 1e6:.2f}M params), {cfg.objective}-prediction, {cfg.schedule} "
          f"schedule, {len(latents)} latents of {'x'.join(map(str, layout['shape']))} (scale {layout['scale']:.4g}), "
          f"{'class-conditional' if num_classes else 'unconditional'}, steps {start}->{cfg.num_steps}", flush=True)
    writer = part.writer
    # Fixed noise and labels: the grids of successive steps show the same samples evolving (montage).
    n_img = max(jax.device_count(), 8)
    noise = jax.random.normal(jax.random.PRNGKey(cfg.seed + 1), (n_img, *layout["shape"]), jnp.float32)
    grid_labels = np.arange(n_img) % num_classes if num_classes else None

    def on_image(step, state):
        loaded = latent_diffusion.LoadedDiffusion(config, setup.model, state.ema_params, setup.schedule,
                                                  cfg.objective, layout, step, mesh)
        z = latent_diffusion.sample_latents(loaded, noise, jax.random.PRNGKey(cfg.seed + 2), sampler=cfg.sampler,
                                            steps=int(cfg.sample_steps), eta=float(cfg.eta), labels=grid_labels)
        picture = images_lib.grid(images_lib.to_uint8(np.asarray(source.decode(jnp.asarray(z)))),
                                  ncols=min(n_img, 8))
        if jax.process_index() == 0:
            images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), picture)
            writer.write_image(step, "samples", picture)

    spec = loop.LoopSpec(
        step_fn=setup.step,
        batches=latent_batches(latents, labels, global_batch=cfg.batch_size, seed=cfg.seed, start_step=start),
        seed_key=jax.random.PRNGKey(cfg.seed), mesh=mesh, num_steps=cfg.num_steps, log_every=cfg.log_every,
        ckpt_every=cfg.ckpt_every, image_every=cfg.image_every, items_per_step=cfg.batch_size,
        progress_keys=("loss", "mse"), finite_keys=("loss",), on_image=on_image if cfg.image_every > 0 else None)
    _, last = loop.run(spec, state, start, part.ckpt, writer)
    return last
