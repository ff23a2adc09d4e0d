"""The trainers, found by the stage a command names (`train.py --stage NAME`).

Each trainer module has `train(config, workdir) -> dict` (the last logged metrics) and trains one part
of a run folder, DIR/<stage>. They share the data pipelines, the loop, mesh, checkpoints and logging of
`vqgan_jax.train`; only their step and model wiring differ.
"""
import importlib

from vqgan_jax.errors import UserError

# stage -> module under vqgan_jax.trainers
STAGES = {
    "vqgan": "vqgan",        # stage 1: the VQGAN tokenizer (DIR/vqgan)
    "prior": "ar_prior",     # stage 2: the GPT-2 prior over its tokens (DIR/prior)
    "dcgan": "dcgan",        # a DCGAN, one part (DIR/dcgan)
    "diffusion": "diffusion",  # stage 2: the latent-diffusion prior over its latents (DIR/diffusion)
    "vae": "vae",            # the variational autoencoder, a generator on its own (DIR/vae)
}


def train(stage: str, config, workdir: str) -> dict:
    """Trains (or resumes) DIR/<stage> with the trainer of `stage`."""
    if stage not in STAGES:
        raise UserError(f"unknown stage {stage!r}: use one of {', '.join(STAGES)}")
    return importlib.import_module(f"vqgan_jax.trainers.{STAGES[stage]}").train(config, workdir)
