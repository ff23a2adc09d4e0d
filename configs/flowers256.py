"""VQGAN on Oxford Flowers102 at 256x256 with taming-transformers' f16 recipe.

ch 128, ch_mult (1, 1, 2, 2, 4) -> 16x16 tokens, 2 res blocks, attention at 16, z 256, codebook
1024 x 256, L1 + LPIPS, hinge GAN with the adaptive weight. Meant for GPUs / TPU VMs: on a CPU one
step takes tens of seconds. Use `jax[cuda12]` and `--config.model.dtype=bfloat16` on recent GPUs.

Presets: `configs/flowers256.py:tiny` (tests).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "flowers256"
    c.data.source = "tfds"
    c.data.tfds_name = "oxford_flowers102"
    c.data.image_size = 256
    c.data.shuffle_buffer = 1024

    c.model.ch = 128
    c.model.ch_mult = (1, 1, 2, 2, 4)
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = (16,)
    c.model.z_channels = 256
    c.quantizer.num_codes = 1024
    c.quantizer.code_dim = 256
    c.quantizer.restart_threshold = 0.5

    c.loss.perceptual_weight = 1.0
    c.loss.disc_weight = 0.8
    c.loss.disc_start = 10000
    c.optim.g_lr = 4.5e-6 * 12   # taming's base_learning_rate scaled by its batch 12
    c.optim.d_lr = 4.5e-6 * 12
    c.optim.ema_decay = 0.999
    # GPT-2 small for the 16x16 = 256-token grids (1024 codes + specials).
    c.prior.n_layer = 12
    c.prior.n_head = 12
    c.prior.n_embd = 768
    c.prior.batch_size = 32
    c.prior.num_steps = 100000
    c.train.batch_size = 16
    c.train.num_steps = 100000
    c.train.log_every = 100
    c.train.image_every = 1000
    c.train.eval_every = 2000
    c.train.ckpt_every = 2000

    if arg == "tiny":
        base.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for flowers256 (known: tiny)")
    c.lock()
    return c
