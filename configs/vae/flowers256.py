"""VAE on Oxford Flowers102 at 256x256, the reference study's setting: a 256-d latent, BCE reconstruction +
beta * KL, Adam lr 1e-4, batch 64, about 300 epochs (1020 training images / 64 per step: ~4800 steps).

ch 64, ch_mult (1, 1, 2, 2, 4) -> a 16x16x16 grid flattened to the 256-d latent.
Presets: `configs/vae/flowers256.py:tiny` (tests).
"""
from configs.vae import common


def get_config(arg: str = ""):
    c = common.get_vae_base_config()
    c.name = "vae_flowers256"
    c.data.source = "tfds"
    c.data.tfds_name = "oxford_flowers102"
    c.data.image_size = 256
    c.model.ch = 64
    c.model.ch_mult = (1, 1, 2, 2, 4)
    c.model.z_channels = 16
    c.model.latent_dim = 256
    c.model.likelihood = "bernoulli"
    c.loss.beta = 1.0
    c.optim.lr = 1e-4
    c.train.batch_size = 64
    c.train.num_steps = 4800
    c.train.log_every = 20
    c.train.image_every = 200
    c.train.eval_every = 400
    c.train.ckpt_every = 400
    if arg == "tiny":
        common.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for vae/flowers256 (known: tiny)")
    c.lock()
    return c
