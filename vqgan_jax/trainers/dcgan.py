"""The DCGAN trainer: build G, D and the data from a config, train into DIR/dcgan, draw its pictures.

`train(config, workdir)` is what `python train.py --config configs/dcgan/mnist.py` calls (config.model.name
is 'dcgan'). It shares the mesh, the loop (logging, checkpoints, resume, signals, NaN stop), metrics and
data pipelines with the VQGAN trainers; the step is in `trainers.dcgan_step`.

    DIR/dcgan/config.json, checkpoints/ (G and D weights, optimiser states, BatchNorm statistics, EMA),
    metrics.jsonl, tb/, images/step_NNNNNNN.png (the generator on fixed noise, every train.image_every),
    and at the end images/evolution.png (those grids stacked), images/loss_curves.png (G and D losses on
    one plot, D(x) and D(G(z)) on another), images/final_samples.png (64 new samples).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from vqgan_jax.train import loop, parallel, runs
from vqgan_jax.train.part import TrainingPart
from vqgan_jax.trainers.dcgan_step import DCGANSetup, DCGANState
from vqgan_jax.viz import curves, montage
from vqgan_jax.viz import images as images_lib

PART = "dcgan"


def fixed_inputs(setup: DCGANSetup, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The fixed noise float32 (n, z_dim) (and labels int32 (n,) cycling over the classes, or None) that the
    image grids of a run show, the same at every image step and on resume."""
    z = np.asarray(jax.random.normal(jax.random.fold_in(jax.random.PRNGKey(seed), 1 << 20), (n, setup.z_dim)))
    labels = np.arange(n, dtype=np.int32) % setup.gen.num_classes if setup.conditional else None
    return z, labels


def sample_grid(setup: DCGANSetup, state: DCGANState, z: np.ndarray, labels) -> np.ndarray:
    """uint8 grid picture (H, W, 3) of G(z) with ceil(sqrt(n)) columns (grayscale shown as gray RGB)."""
    x = images_lib.to_uint8(np.asarray(setup.generate(state, z, labels)))
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return images_lib.grid(x, ncols=int(np.ceil(np.sqrt(len(x)))))


def write_pictures(out: str, setup: DCGANSetup, state: DCGANState, seed: int) -> dict[str, str]:
    """The end-of-training pictures in out/images: evolution.png, loss_curves.png, final_samples.png."""
    image_dir = os.path.join(out, "images")
    written = {}
    evo = montage.evolution_montage(image_dir, os.path.join(image_dir, "evolution.png"), kind="samples")
    if evo:
        written["evolution"] = evo
    metrics = os.path.join(out, "metrics.jsonl")
    if os.path.isfile(metrics):
        lc = curves.loss_curves(metrics, os.path.join(image_dir, "loss_curves.png"), stage=PART)
        if lc:
            written["loss_curves"] = lc
    z, labels = fixed_inputs(setup, 64, seed + 1)  # other noise than the grids during training
    path = os.path.join(image_dir, "final_samples.png")
    images_lib.save_png(path, sample_grid(setup, state, z, labels))
    written["final_samples"] = path
    return written


def train(config, workdir: str) -> dict:
    """Trains (or resumes) the DCGAN in DIR/dcgan. Returns the last logged metrics."""
    from vqgan_jax.data import pipeline as data_lib  # tf.data only where data is read
    out = runs.stage_dir(workdir, PART)
    t = config.train
    loop.check_settings("train", num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every,
                        keep_checkpoints=t.keep_checkpoints, image_every=t.image_every)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(t.batch_size, mesh)
    info = data_lib.dataset_info(config.data)  # validates the data source before anything slow
    config.data.num_classes = int(info["num_classes"])
    setup = DCGANSetup.shared(config, mesh)    # checks the image size and loss kind
    with TrainingPart(workdir, PART, config, keep=t.keep_checkpoints, ckpt_every=t.ckpt_every,
                      label="the DCGAN") as part:
        state, start = part.start(setup.abstract_state, lambda: setup.init_state(t.seed))
        if start >= t.num_steps:
            print(f"DCGAN already trained to step {start} (train.num_steps={t.num_steps}); nothing to do",
                  flush=True)
            return {}
        print(f"DCGAN {setup.image_size}x{setup.image_size}x{setup.channels}: {info['num_train']} training "
              f"images, {'class-conditional, ' if setup.conditional else ''}{jax.device_count()} devices, batch "
              f"{t.batch_size}, steps {start}->{t.num_steps}", flush=True)

        pi, pc = jax.process_index(), jax.process_count()
        ds = data_lib.make_dataset(config.data, split="train", global_batch_size=t.batch_size, seed=t.seed,
                                   training=True, process_index=pi, process_count=pc, start_batch=start)
        writer = part.writer
        fixed_z, fixed_labels = fixed_inputs(setup, int(t.num_fixed), t.seed)

        def on_image(step, state):
            picture = sample_grid(setup, state, fixed_z, fixed_labels)
            if pi == 0:
                images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), picture)
                writer.write_image(step, "fixed_noise", picture)

        spec = loop.LoopSpec(
            step_fn=setup.step, batches=data_lib.iterate_numpy(ds), seed_key=jax.random.PRNGKey(t.seed),
            mesh=mesh, num_steps=t.num_steps, log_every=t.log_every, ckpt_every=t.ckpt_every,
            image_every=t.image_every, items_per_step=t.batch_size,
            progress_keys=("d/loss", "g/loss", "d/real", "d/fake"), finite_keys=("d/loss", "g/loss"),
            on_image=on_image if t.image_every > 0 else None)
        state, last = loop.run(spec, state, start, part.ckpt, writer)
    if pi == 0 and int(state.step) >= t.num_steps:
        for name, path in write_pictures(out, setup, state, t.seed).items():
            print(f"{name}: {path}", flush=True)
    return last
