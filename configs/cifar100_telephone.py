"""The Keras real-vs-fake study's VQ-VAE: CIFAR-100 class "telephone" at 32x32, no discriminator, no perceptual loss.

A plain VQ-VAE (L1 reconstruction + codebook + commitment): `loss.disc_weight=0` removes the GAN
entirely (no discriminator work at all). 500 training images: the held-out loss shows overfitting.
For the PNG folder use `--config.data.source=folder --config.data.dir=../shared/data/cifar100-telephone/train`.

Presets: `configs/cifar100_telephone.py:tiny` (tests).
"""
from configs import base


def get_config(arg: str = ""):
    c = base.get_base_config()
    c.name = "cifar100_telephone"
    c.data.source = "tfds"
    c.data.tfds_name = "cifar100"
    c.data.class_filter = "telephone"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.image_size = 32
    c.data.shuffle_buffer = 512

    c.model.ch = 64
    c.model.ch_mult = (1, 2)      # 32 -> 16: a 16x16 grid of tokens, as the seed's 2 strided convs
    c.model.num_res_blocks = 2
    c.model.attn_resolutions = ()
    c.model.z_channels = 64
    c.quantizer.num_codes = 256
    c.quantizer.code_dim = 64
    c.quantizer.restart_threshold = 0.5

    c.loss.perceptual_weight = 0.0
    c.loss.disc_weight = 0.0      # VQ-VAE: no discriminator
    c.loss.rec_type = "l2"        # the seed used MSE
    c.optim.g_lr = 2e-4
    c.train.batch_size = 64
    c.train.num_steps = 5000
    c.train.log_every = 50
    c.train.image_every = 500
    c.train.eval_every = 250
    c.train.ckpt_every = 1000

    if arg == "tiny":
        base.apply_tiny(c)
        c.loss.disc_weight = 0.0
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for cifar100_telephone (known: tiny)")
    c.lock()
    return c
