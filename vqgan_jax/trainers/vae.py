"""The VAE trainer (part DIR/vae): build the VAE (and the VAE-GAN's discriminator), optimizer and data from a
config, then train with the shared loop, mesh, checkpoints and logging.

`train(config, workdir)` is what `python train.py --config configs/vae/flowers64.py` calls (stage =
config.model.name). The step is `trainers.vae_step`. Pictures during training:
    DIR/vae/images/step_*.png                   samples at a fixed noise (the evolution montage)
    DIR/vae/images/reconstructions/step_*.png   held-out originals over reconstructions
"""
from __future__ import annotations

import functools
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax import backends, models
from vqgan_jax.errors import UserError
from vqgan_jax.losses import vae as vae_loss
from vqgan_jax.models import patchgan
from vqgan_jax.train import loop, optim, parallel, setups
from vqgan_jax.train.checkpoint import abstract_like
from vqgan_jax.train.part import TrainingPart
from vqgan_jax.train.state import zero_lecam
from vqgan_jax.trainers.vae_step import VAELoss, VAEState, vae_train_step
from vqgan_jax.viz import images as images_lib


class VAESetup:
    """Everything static about a VAE run: models, optimizers, loss settings, the jitted step and helpers."""

    def __init__(self, config, mesh=None):
        self.config = config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.ops = backends.resolve(config.ops, self.mesh.devices.flat)
        layers = backends.vqgan_layers(self.ops, mesh=self.mesh)
        self.model = models.get(config.model.name).from_config(config, **layers)
        self.loss = VAELoss.from_config(config)
        self.disc = patchgan.from_config(config, **layers) if self.loss.use_disc else None
        o = config.optim
        self.tx = optim.adam(o.lr, b1=o.b1, b2=o.b2, warmup_steps=o.warmup_steps, grad_clip=o.grad_clip)
        self.d_tx = optim.adam(o.d_lr, b1=o.b1, b2=o.b2, warmup_steps=o.warmup_steps, grad_clip=o.grad_clip)
        self.ema_decay = float(o.ema_decay)
        self.image_size = int(config.data.image_size)
        from vqgan_jax.losses.lpips import lpips_apply_fn
        lpips_apply = lpips_apply_fn(self.loss.perceptual_weight)
        step = functools.partial(vae_train_step, model=self.model, disc=self.disc, tx=self.tx, d_tx=self.d_tx,
                                 loss=self.loss, lpips_apply=lpips_apply, ema_decay=self.ema_decay)
        self.state_sharding = parallel.replicated(self.mesh)
        rep = parallel.replicated(self.mesh)
        self._step_jit = jax.jit(step, in_shardings=(self.state_sharding, parallel.batch_sharding(self.mesh), rep, rep),
                                 out_shardings=(self.state_sharding, rep), donate_argnums=(0,))

    @classmethod
    def shared(cls, config, mesh=None) -> "VAESetup":
        """Built once per process for the same config (but `train`) and mesh (see `train.setups`)."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = setups.config_key({k: v for k, v in config.to_dict().items() if k != "train"})
        return setups.shared("vae", (key, setups.mesh_key(mesh)), lambda: cls(config, mesh))

    def _dummy(self):
        c = int(self.config.model.out_channels)
        return jnp.zeros((1, self.image_size, self.image_size, c), jnp.float32), jnp.zeros((1,), jnp.int32)

    def _init(self, rng: jax.Array) -> VAEState:
        k_p, k_d, k_l = jax.random.split(rng, 3)
        x, label = self._dummy()
        params = self.model.init({"params": k_p, "latent": k_l}, x, label, train=False)["params"]
        d_params = self.disc.init(k_d, x)["params"] if self.disc is not None else {}
        return VAEState(step=jnp.zeros((), jnp.int32), params=params, opt=self.tx.init(params),
                        ema_params=params if self.ema_decay > 0 else {}, d_params=d_params,
                        d_opt=self.d_tx.init(d_params) if self.disc is not None else {}, lecam=zero_lecam())

    def init_state(self, seed: int) -> VAEState:
        return parallel.run_once_jitted(self._init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding,
                                        compiler_options=backends.init_compiler_options(self.ops))

    def abstract_state(self) -> VAEState:
        return abstract_like(jax.eval_shape(self._init, jax.random.PRNGKey(0)), self.state_sharding)

    @functools.cached_property
    def consts(self) -> dict:
        if self.loss.perceptual_weight <= 0:
            return {}
        from vqgan_jax.losses import lpips as lpips_lib
        return {"lpips": parallel.replicate_tree(lpips_lib.load_lpips_params()["params"], self.mesh)}

    def step(self, state: VAEState, batch: dict, rng: jax.Array):
        return self._step_jit(state, batch, rng, self.consts)

    def compile_count(self) -> int:
        return self._step_jit._cache_size()

    # -- evaluation helpers ----------------------------------------------------------------------------
    def eval_params(self, state: VAEState):
        return state.ema_params if self.ema_decay > 0 else state.params

    @functools.cached_property
    def _eval_jit(self):
        model, loss = self.model, self.loss

        def evaluate(params, x, label, rng):
            out, aux = model.apply({"params": params}, x, label, train=False, rngs={"latent": rng})
            nll = vae_loss.reconstruction_nll(x, out, loss.likelihood, loss.sigma)  # (B,)
            kl = vae_loss.kl_to_standard_normal(aux["mean"], aux["logvar"])
            kl = jnp.sum(kl.reshape(kl.shape[0], -1), axis=1)
            x_hat = model.apply({"params": params}, x, label, method=type(model).reconstruct)
            mse = jnp.mean(jnp.square((jnp.clip(x_hat, -1, 1) - x) / 2.0), axis=(1, 2, 3))
            return x_hat, {"nll": jnp.mean(nll), "kl": jnp.mean(kl), "means": aux["mean"],
                           "psnr": jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10)))}
        return jax.jit(evaluate)

    def evaluate(self, state: VAEState, x, label, rng):
        """x float32 (B, H, W, C), label int32 (B,) -> (reconstructions of the posterior means, {'nll', 'kl'
        (means over images of the per-image sums), 'means' (B, *latent), 'psnr'})."""
        return self._eval_jit(self.eval_params(state), x, label, rng)

    @functools.cached_property
    def _decode_jit(self):
        return jax.jit(lambda p, z, label: self.model.apply({"params": p}, z, label,
                                                            method=type(self.model).decode_latents))

    def decode(self, state: VAEState, z, label):
        return self._decode_jit(self.eval_params(state), z, label)


def train(config, workdir: str) -> dict:
    """Trains (or resumes) the VAE in DIR/vae. Returns the last logged metrics."""
    from vqgan_jax.data import pipeline as data_lib  # tf.data only where data is read
    t = config.train
    loop.check_settings("train", num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every,
                        keep_checkpoints=t.keep_checkpoints, image_every=t.image_every, eval_every=t.eval_every)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    info = data_lib.dataset_info(config.data)
    config.data.num_classes = int(info["num_classes"])
    if config.model.conditional and config.data.num_classes < 1:
        raise UserError("model.conditional=True needs class labels: a folder of class subfolders or TFDS")
    setup = VAESetup.shared(config, mesh)
    with TrainingPart(workdir, "vae", config, keep=t.keep_checkpoints, ckpt_every=t.ckpt_every,
                      label="the VAE") as part:
        state, start = part.start(setup.abstract_state, lambda: setup.init_state(t.seed))
        return _train(config, mesh, setup, part, state, start, info)


def _train(config, mesh, setup, part: TrainingPart, state, start: int, info: dict) -> dict:
    from vqgan_jax.data import pipeline as data_lib
    out, t = part.dir, config.train
    if start >= t.num_steps:
        print(f"VAE already trained to step {start} (train.num_steps={t.num_steps}); nothing to do", flush=True)
        return {}
    print(f"vae: {info['num_train']} training images ({info['num_eval']} held out), latent "
          f"{setup.model.latent_shape}, {len(jax.devices())} devices, batch {t.batch_size}, "
          f"steps {start}->{t.num_steps}", flush=True)

    pc, pi = jax.process_count(), jax.process_index()
    train_ds = data_lib.make_dataset(config.data, split="train", global_batch_size=t.batch_size, seed=t.seed,
                                     training=True, process_index=pi, process_count=pc, start_batch=start)
    eval_ds = data_lib.make_dataset(config.data, split="eval", global_batch_size=t.batch_size, seed=t.seed,
                                    training=False, process_index=pi, process_count=pc, repeat=True)
    # The same held-out batches at every evaluation, in a straight run and after any resume.
    held_out = list(itertools.islice(data_lib.iterate_numpy(eval_ds), max(int(t.eval_batches), 1)))
    shown = held_out[0]
    shown = {k: v[: t.num_image_rows] for k, v in shown.items()}  # fixed pictures for the grids
    n_fixed = int(config.sample.num_fixed)
    # The same noise (and labels) at every image step: the evolution montage shows one set of samples.
    fixed_z = float(config.sample.temperature) * jax.random.normal(
        jax.random.PRNGKey(t.seed + 1), (n_fixed, *setup.model.latent_shape))
    fixed_labels = (np.arange(n_fixed) % max(config.data.num_classes, 1)).astype(np.int32)
    writer = part.writer

    def on_image(step, state):
        x_hat, _ = setup.evaluate(state, shown["image"], shown["label"], jax.random.PRNGKey(0))
        recs = images_lib.originals_over_reconstructions(shown["image"], np.asarray(x_hat))
        samples = images_lib.grid(images_lib.to_uint8(np.asarray(setup.decode(state, fixed_z, fixed_labels))),
                                  ncols=min(n_fixed, 8))
        if pi == 0:
            images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), samples)
            images_lib.save_png(os.path.join(out, "images", "reconstructions", f"step_{step:07d}.png"), recs)
            writer.write_image(step, "samples", samples)
            writer.write_image(step, "reconstructions", recs)

    def on_eval(step, state):
        nll, kl, psnr, means = [], [], [], []
        for i, host_batch in enumerate(held_out[: t.eval_batches]):
            b = parallel.global_batch(host_batch, mesh)
            _, m = jax.device_get(setup.evaluate(state, b["image"], b["label"], jax.random.PRNGKey(i)))
            nll.append(float(m["nll"]))
            kl.append(float(m["kl"]))
            psnr.append(float(m["psnr"]))
            means.append(np.asarray(m["means"]))
        dims = int(np.prod(shown["image"].shape[1:]))
        return {"eval/rec": float(np.mean(nll)), "eval/kl": float(np.mean(kl)), "eval/psnr": float(np.mean(psnr)),
                "eval/neg_elbo_per_dim": float((np.mean(nll) + np.mean(kl)) / dims),
                "eval/active_units": float(vae_loss.active_units(np.concatenate(means)))}

    spec = loop.LoopSpec(
        step_fn=setup.step, batches=data_lib.iterate_numpy(train_ds), seed_key=jax.random.PRNGKey(t.seed),
        mesh=mesh, num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every,
        image_every=t.image_every, eval_every=t.eval_every, items_per_step=t.batch_size,
        progress_keys=("loss", "rec", "kl", "beta", "active_units", "d/loss"),
        finite_keys=("loss", "rec", "kl", "d/loss"), on_image=on_image, on_eval=on_eval)
    _, last = loop.run(spec, state, start, part.ckpt, writer)
    return last
