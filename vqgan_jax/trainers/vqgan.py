"""The VQGAN trainer (stage 1): build the VQGAN, discriminator, optimizers and data from a config, then train.

`train(config, workdir)` is what `python train.py --stage vqgan` calls. The step itself is in
`trainers.vqgan_step`, the loop in `train.loop`; this file only connects them to the run folder. The
layers the models compute with are picked once, here, from the mesh's devices and `config.ops`
(`vqgan_jax.backends`).
"""
from __future__ import annotations

import functools
import itertools
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax import backends
from vqgan_jax.models import patchgan, vqgan
from vqgan_jax.train import loop, optim, parallel, runs, setups
from vqgan_jax.train.checkpoint import abstract_like
from vqgan_jax.train.part import TrainingPart
from vqgan_jax.train.state import VQGANState, zero_lecam
from vqgan_jax.trainers import init_from
from vqgan_jax.trainers.vqgan_step import LossSettings, vqgan_train_step
from vqgan_jax.viz import images as images_lib

log = logging.getLogger("vqgan_jax")


class VQGANSetup:
    """Everything static about a stage-1 run: models, optimizers, loss settings, the jitted pieces.

    Shared by training, the benchmark and the tests, so all of them compile the same program.
    """

    def __init__(self, config, mesh=None, *, disable_rules=()):
        self.config = config  # when shared (`VQGANSetup.shared`), its `train` section is the first run's
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.ops = backends.resolve(config.ops, self.mesh.devices.flat)
        layers = backends.vqgan_layers(self.ops, disable_rules, mesh=self.mesh)
        self.model = vqgan.from_config(config, **layers)
        self.disc = patchgan.from_config(config, **layers)
        self.loss = LossSettings.from_config(config.loss)
        o = config.optim
        self.g_tx = optim.adam(o.g_lr, b1=o.b1, b2=o.b2, warmup_steps=o.warmup_steps, grad_clip=o.grad_clip)
        self.d_tx = optim.adam(o.d_lr, b1=o.b1, b2=o.b2, warmup_steps=o.warmup_steps, grad_clip=o.grad_clip)
        self.ema_decay = float(o.ema_decay)
        self.image_size = int(config.data.image_size)
        from vqgan_jax.losses.lpips import lpips_apply_fn
        lpips_apply = lpips_apply_fn(self.loss.perceptual_weight)
        step = functools.partial(
            vqgan_train_step, model=self.model, disc=self.disc, g_tx=self.g_tx, d_tx=self.d_tx, loss=self.loss,
            lpips_apply=lpips_apply, ema_decay=self.ema_decay,
            restart_threshold=float(config.quantizer.restart_threshold), ema_codebook=bool(config.quantizer.ema))
        self.state_sharding = parallel.replicated(self.mesh)
        rep = parallel.replicated(self.mesh)
        self._step_jit = jax.jit(
            step, in_shardings=(self.state_sharding, parallel.batch_sharding(self.mesh), rep, rep),
            out_shardings=(self.state_sharding, rep), donate_argnums=(0,))

    @classmethod
    def shared(cls, config, mesh=None) -> "VQGANSetup":
        """`VQGANSetup(config, mesh)`, built once per process for the same config and mesh (see
        `setups.py`). The key is the whole config except `train`, which the setup never reads, so a
        run continued to more steps reuses the compiled step."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = setups.config_key({k: v for k, v in config.to_dict().items() if k != "train"})
        return setups.shared("vqgan", (key, setups.mesh_key(mesh)), lambda: cls(config, mesh))

    # -- state ---------------------------------------------------------------------------------------
    def _init(self, rng: jax.Array) -> VQGANState:
        k_g, k_d, k_vq, k_drop = jax.random.split(rng, 4)
        x = jnp.zeros((1, self.image_size, self.image_size, 3), jnp.float32)
        variables = self.model.init({"params": k_g, "vq": k_vq, "dropout": k_drop}, x, train=False)
        g_params = variables["params"]
        d_params = self.disc.init(k_d, x)["params"]
        return VQGANState(
            step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
            g_opt=self.g_tx.init(g_params), d_opt=self.d_tx.init(d_params),
            vq_stats=variables.get("vq_stats", {}),
            ema_params=g_params if self.ema_decay > 0 else {}, lecam=zero_lecam())

    def init_state(self, seed: int) -> VQGANState:
        return parallel.run_once_jitted(self._init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding,
                                        compiler_options=backends.init_compiler_options(self.ops))

    def abstract_state(self) -> VQGANState:
        shapes = jax.eval_shape(self._init, jax.random.PRNGKey(0))
        return abstract_like(shapes, self.state_sharding)

    # -- step ----------------------------------------------------------------------------------------
    @functools.cached_property
    def consts(self) -> dict:
        """Frozen arrays the step reads (LPIPS weights), loaded on first use and placed on every device."""
        if self.loss.perceptual_weight <= 0:
            return {}
        from vqgan_jax.losses import lpips as lpips_lib
        return {"lpips": parallel.replicate_tree(lpips_lib.load_lpips_params()["params"], self.mesh)}

    def step(self, state: VQGANState, batch: dict, rng: jax.Array):
        """(state, batch, rng) -> (state, metrics); compiled once (see `compile_count`)."""
        return self._step_jit(state, batch, rng, self.consts)

    def compile_step(self, state: VQGANState, batch: dict, rng: jax.Array):
        """The step compiled ahead of time for these arguments (multi-process start-up, `train.loop`)."""
        compiled = self._step_jit.lower(state, batch, rng, self.consts).compile()
        return lambda state, batch, rng: compiled(state, batch, rng, self.consts)

    def compile_count(self) -> int:
        return self._step_jit._cache_size()

    # -- evaluation helpers ----------------------------------------------------------------------------
    def eval_variables(self, state: VQGANState) -> dict:
        params = state.ema_params if self.ema_decay > 0 else state.g_params
        return {"params": params, **({"vq_stats": state.vq_stats} if state.vq_stats else {})}

    @functools.cached_property
    def _reconstruct_jit(self):
        def rec(variables, x):
            x_hat, aux = self.model.apply(variables, x, train=False)
            err = jnp.abs(x_hat.astype(jnp.float32) - x)
            mse = jnp.mean(jnp.square((jnp.clip(x_hat, -1, 1) - x) / 2.0), axis=(1, 2, 3))
            return x_hat, {"l1": jnp.mean(err), "psnr": jnp.mean(-10.0 * jnp.log10(jnp.maximum(mse, 1e-10))),
                           "indices": aux["indices"]}
        return jax.jit(rec)

    def reconstruct(self, state: VQGANState, x: np.ndarray):
        """x: float32 (B, H, W, 3) in [-1, 1] -> (x_hat float32 (B, H, W, 3), {'l1', 'psnr', 'indices'})."""
        return self._reconstruct_jit(self.eval_variables(state), x)


def train(config, workdir: str) -> dict:
    """Trains (or resumes) stage 1 in DIR/vqgan. Returns the last logged metrics."""
    # tf.data is imported where data is read, so the models, steps and benchmarks import without
    # TensorFlow (a GPU host that only benchmarks or samples need not install it).
    from vqgan_jax.data import pipeline as data_lib
    t = config.train
    loop.check_settings("train", num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every,
                        keep_checkpoints=t.keep_checkpoints, image_every=t.image_every, eval_every=t.eval_every)
    out = runs.stage_dir(workdir, "vqgan")
    mesh = parallel.make_mesh()
    parallel.check_batch_size(t.batch_size, mesh)
    info = data_lib.dataset_info(config.data)  # validates the data source before anything slow
    config.data.num_classes = int(info["num_classes"])
    if config.get("init_from"):
        init_from.adopt_network(config, workdir)  # the source's architecture comes with its weights
    with TrainingPart(workdir, "vqgan", config, keep=t.keep_checkpoints, ckpt_every=t.ckpt_every,
                      label="stage 1") as part:
        setup = VQGANSetup.shared(config, mesh)

        def fresh_state():
            state = setup.init_state(t.seed)
            if config.get("init_from"):
                state = init_from.load_weights(state, setup, str(config.init_from))
                print(f"stage 1 starts from the weights of {config.init_from}", flush=True)
            return state

        state, start = part.start(setup.abstract_state, fresh_state)
        if start >= t.num_steps:
            print(f"stage 1 already trained to step {start} (train.num_steps={t.num_steps}); nothing to do",
                  flush=True)
            return {}
        print(f"stage 1: {info['num_train']} training images ({info['num_eval']} held out), "
              f"{len(jax.devices())} devices, batch {t.batch_size}, steps {start}->{t.num_steps}", flush=True)

        pc, pi = jax.process_count(), jax.process_index()
        train_ds = data_lib.make_dataset(config.data, split="train", global_batch_size=t.batch_size, seed=t.seed,
                                         training=True, process_index=pi, process_count=pc, start_batch=start)
        batches = data_lib.iterate_numpy(train_ds)
        # The same held-out batches at every evaluation, in a straight run and after any resume.
        eval_ds = data_lib.make_dataset(config.data, split="eval", global_batch_size=t.batch_size, seed=t.seed,
                                        training=False, process_index=pi, process_count=pc, repeat=True)
        held_out = list(itertools.islice(data_lib.iterate_numpy(eval_ds), max(int(t.eval_batches), 1)))
        shown = held_out[0]["image"][: t.num_image_rows]  # fixed pictures for the grids
        writer = part.writer

        def on_image(step, state):
            x_hat, _ = setup.reconstruct(state, shown)
            picture = images_lib.originals_over_reconstructions(shown, np.asarray(x_hat))
            if pi == 0:
                images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), picture)
                writer.write_image(step, "reconstructions", picture)

        def on_eval(step, state):
            l1, psnr, counts = [], [], np.zeros(config.quantizer.num_codes, np.int64)
            for host_batch in held_out[: t.eval_batches]:
                b = parallel.global_batch(host_batch, mesh)
                _, m = setup.reconstruct(state, b["image"])
                m = jax.device_get(m)
                l1.append(float(m["l1"]))
                psnr.append(float(m["psnr"]))
                counts += np.bincount(np.asarray(m["indices"]).ravel(), minlength=counts.size)
            p = counts / max(counts.sum(), 1)
            return {"eval/rec": float(np.mean(l1)), "eval/psnr": float(np.mean(psnr)),
                    "eval/usage": float((counts > 0).mean()),
                    "eval/perplexity": float(np.exp(-(p[p > 0] * np.log(p[p > 0])).sum()))}

        spec = loop.LoopSpec(
            step_fn=setup.step, batches=batches, seed_key=jax.random.PRNGKey(t.seed), mesh=mesh,
            num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every, image_every=t.image_every,
            eval_every=t.eval_every, items_per_step=t.batch_size,
            progress_keys=("g/rec", "g/commit", "g/adv", "d/loss", "d_weight", "codebook/usage"),
            finite_keys=("g/rec", "g/commit", "g/total", "d/loss", "g/perceptual"),
            on_image=on_image, on_eval=on_eval, compile_step=setup.compile_step)
        _, last = loop.run(spec, state, start, part.ckpt, writer)
    return last
