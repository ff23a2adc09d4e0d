"""VQGAN on Oxford Flowers102 at 64x64: the config benchmarks compare against taming-transformers.

The model is fixed (do not tune it here): ch 64, ch_mult (1, 2, 2) -> a 16x16 grid of tokens,
one res block per level, attention at 16x16, z 64, codebook 512 x 64, batch 16, Adam (0.5, 0.9)
lr 1e-4 for G and D, disc_start 1500, adaptive disc weight 0.8, hinge, beta 0.25, L1 + LPIPS.
Default data: TFDS `oxford_flowers102`; for the photo folder use
`--config.data.source=folder --config.data.dir=../shared/data/flowers64`.

Presets: `configs/flowers64.py:tiny` (seconds on a CPU; tests).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "flowers64"
    c.data.source = "tfds"
    c.data.tfds_name = "oxford_flowers102"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.image_size = 64

    c.model.ch = 64
    c.model.ch_mult = (1, 2, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (16,)
    c.model.z_channels = 64
    c.quantizer.num_codes = 512
    c.quantizer.code_dim = 64
    c.quantizer.beta = 0.25
    # Dead codes (fewer than 0.5 assignments per step over a ~10-step window) restart from encoder
    # outputs: taming's plain codebook collapses to ~4% usage on this data (19 of 512 codes after 720
    # steps); restarts keep nearly every code alive (bench/README.md, quality).
    c.quantizer.restart_threshold = 0.5

    c.loss.perceptual_weight = 1.0
    c.loss.disc_weight = 0.8
    c.loss.disc_start = 1500
    c.loss.disc_loss = "hinge"
    c.loss.codebook_weight = 1.0

    # The prior over the 16x16 grids: GPT-2 with 8 layers, 8 heads, width 256; context 1 + 256 tokens;
    # vocabulary 512 codes + a null/start token (+ 102 class tokens when labels are used).
    c.prior.n_layer = 8
    c.prior.n_head = 8
    c.prior.n_embd = 256
    c.prior.num_steps = 20000

    c.optim.g_lr = 1e-4
    c.optim.d_lr = 1e-4
    c.train.batch_size = 16
    c.train.num_steps = 20000
    c.train.log_every = 50
    c.train.image_every = 500
    c.train.eval_every = 1000
    c.train.ckpt_every = 1000

    if arg == "tiny":
        base.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for flowers64 (known: tiny)")
    c.lock()
    return c
