"""VAE on Oxford Flowers102 at 64x64: the reference recipe (BCE + KL, a 256-d latent, Adam 1e-4, batch 64)
at the size the VQGAN + GPT-2 row of the README uses, so the two can be compared on the same photos.

ch 64, ch_mult (1, 2, 2, 2) -> an 8x8x16 grid flattened to the 256-d latent; KL warm-up over 2000 steps.
Default data: TFDS `oxford_flowers102`; for the photo folder use
`--config.data.source=folder --config.data.dir=../shared/data/flowers64`.
Spatial latent (for a latent-diffusion prior): `--config.model.latent_dim=0` (8x8x16).
Conditional VAE: `--config.model.conditional=True`; VAE-GAN: `--config.loss.disc_weight=0.1`.

Presets: `configs/vae/flowers64.py:tiny` (seconds on a CPU; tests).
"""
from configs.vae import common


def get_config(arg: str = ""):
    c = common.get_vae_base_config()
    c.name = "vae_flowers64"
    c.data.source = "tfds"
    c.data.tfds_name = "oxford_flowers102"
    c.data.image_size = 64
    c.model.ch = 64
    c.model.ch_mult = (1, 2, 2, 2)
    c.model.z_channels = 16
    c.model.latent_dim = 256
    c.model.likelihood = "bernoulli"
    c.loss.kl_warmup_steps = 2000
    c.optim.lr = 1e-4
    c.train.batch_size = 64
    c.train.num_steps = 30000
    c.train.log_every = 50
    c.train.image_every = 500
    c.train.eval_every = 1000
    c.train.ckpt_every = 1000
    if arg == "tiny":
        common.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for vae/flowers64 (known: tiny)")
    c.lock()
    return c
