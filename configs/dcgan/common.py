"""What every DCGAN config starts from: the shared data section of `configs/base.py`, then the DCGAN's
own model, loss, optimiser and loop settings (Radford et al.'s recipe). Not a config file itself."""
import ml_collections

from configs import base


def get_dcgan_base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "dcgan"
    c.data = base.get_base_config().data   # same keys as every other config (source, dir, image_size, ...)

    c.model = m = ml_collections.ConfigDict()
    m.name = "dcgan"              # vqgan_jax.models.dcgan; its part is DIR/dcgan
    m.z_dim = 100                 # the paper's noise size
    m.ngf = 64                    # generator width at the last (full-resolution) layer
    m.ndf = 64                    # discriminator width at the first layer
    m.conditional = False         # class embedding in G, projection in D (needs labels)
    m.embed_dim = 50              # generator's class embedding size when conditional

    c.loss = l = ml_collections.ConfigDict()
    l.kind = "non_saturating"     # non_saturating (the paper's) | hinge (losses/gan.py)

    c.optim = o = ml_collections.ConfigDict()
    o.g_lr = 2e-4                 # Adam 2e-4, beta1 0.5 (the paper: 0.9 made training oscillate)
    o.d_lr = 2e-4
    o.b1 = 0.5
    o.b2 = 0.999
    o.ema_decay = 0.0             # EMA of generator weights for sampling; 0 = off (sample the trained G)

    c.train = t = ml_collections.ConfigDict()
    t.num_steps = 5000
    t.batch_size = 128            # the paper's mini-batch; global, over all devices
    t.seed = 0
    t.log_every = 100
    t.ckpt_every = 1000
    t.image_every = 500           # fixed-noise grid of the generator
    t.keep_checkpoints = 3
    t.num_fixed = 64              # fixed noise vectors drawn at each image step (an 8x8 grid)
    return c


def apply_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `tiny` preset: synthetic 16x16 images, widths 8, 4 steps; the same code paths in seconds."""
    c.data.source = "synthetic"
    c.data.image_size = 16
    c.data.synthetic_size = 64
    c.data.shuffle_buffer = 64
    c.model.z_dim = 16
    c.model.ngf = 8
    c.model.ndf = 8
    c.model.embed_dim = 8
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.ckpt_every = 2
    c.train.image_every = 2
    c.train.num_fixed = 16
    return c
