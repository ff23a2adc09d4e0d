"""The demo: built-in synthetic flower images, a small model, minutes on a 2-core CPU (`make demo`).

32x32 procedural flowers (no download), ch 32, ch_mult (1, 2, 2) -> 8x8 tokens, a 128-code
codebook with dead-code restarts, L1 reconstruction (no LPIPS: its VGG16 would dominate the CPU
time), and the discriminator switched on for the last part so every loss term runs.

Presets: `configs/demo.py:tiny` (tests).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "demo"
    c.data.source = "synthetic"
    c.data.image_size = 32
    c.data.synthetic_size = 1024
    c.data.shuffle_buffer = 1024

    c.model.ch = 32
    c.model.ch_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.z_channels = 32
    c.quantizer.num_codes = 128
    c.quantizer.code_dim = 32
    c.quantizer.restart_threshold = 0.5
    c.disc.ndf = 32
    c.disc.n_layers = 2

    c.loss.perceptual_weight = 0.0
    c.loss.disc_start = 1200
    c.loss.disc_weight = 0.5
    c.optim.g_lr = 4e-4
    c.optim.d_lr = 4e-4
    c.optim.ema_decay = 0.99
    # A small prior over the 8x8 token grids (6 classes of synthetic flowers: class-conditional).
    c.prior.n_layer = 4
    c.prior.n_head = 4
    c.prior.n_embd = 128
    c.prior.batch_size = 32
    c.prior.num_steps = 800
    c.prior.warmup_steps = 50
    c.prior.lr = 1e-3
    c.prior.log_every = 50
    c.prior.ckpt_every = 400
    c.prior.image_every = 400
    c.prior.top_k = 32
    c.train.batch_size = 16
    c.train.num_steps = 1500
    c.train.log_every = 50
    c.train.image_every = 250
    c.train.eval_every = 250
    c.train.ckpt_every = 500

    if arg == "tiny":
        base.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for demo (known: tiny)")
    c.lock()
    return c
