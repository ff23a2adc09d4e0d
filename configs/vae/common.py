"""The shared base of the VAE configs (configs/vae/*.py): the VQGAN base's data, train loop, discriminator
and ops sections (same keys, same meaning), and the VAE's own model / loss / optim sections."""
import ml_collections

from configs import base


def get_vae_base_config() -> ml_collections.ConfigDict:
    b = base.get_base_config()
    c = ml_collections.ConfigDict()
    c.name = "vae"
    c.ops = b.ops
    c.data = b.data
    c.train = b.train
    c.disc = b.disc               # the VAE-GAN's PatchGAN (used only when loss.disc_weight > 0)
    c.diffusion = b.diffusion     # --stage diffusion: a latent-diffusion prior over a spatial-latent VAE

    c.model = m = ml_collections.ConfigDict()
    m.name = "vae"                # vqgan_jax.models.MODELS; the run folder's part is DIR/vae
    m.ch = 64
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = ()       # the encoder and decoder always have one attention block in the middle
    m.z_channels = 8              # channels of the encoder's grid (spatial latent: of the latent itself)
    m.latent_dim = 256            # vector latent size; 0 = spatial latent (H/f, W/f, z_channels)
    m.likelihood = "bernoulli"    # bernoulli (BCE, the reference) | gaussian (L2) | laplace (L1)
    m.conditional = False         # class-conditional VAE (labels from folder subfolders or TFDS)
    m.class_dim = 16              # size of the learned class embedding
    m.out_channels = 3
    m.dropout = 0.0
    m.dtype = "float32"           # float32 | bfloat16 (compute dtype; params stay float32)

    c.loss = l = ml_collections.ConfigDict()
    l.sigma = 0.1                 # scale of the gaussian / laplace likelihood on the [-1, 1] pixel scale
    l.beta = 1.0                  # weight of the KL term (1 = the ELBO)
    l.kl_warmup_steps = 0         # beta rises linearly from 0 over these steps; 0 = off
    l.free_bits = 0.0             # nats per latent dimension below which KL costs nothing extra; 0 = off
    l.perceptual_weight = 0.0     # LPIPS-VGG16 per image (added to the summed NLL); 0 = off
    l.disc_weight = 0.0           # VAE-GAN: adversarial term times taming's adaptive weight; 0 = off
    l.disc_start = 0              # step at which the adversarial term and D updates switch on
    l.disc_loss = "hinge"         # hinge | non_saturating
    l.adaptive_weight = True
    l.adaptive_weight_max = 1e4

    c.optim = o = ml_collections.ConfigDict()
    o.lr = 1e-4                   # Adam, the reference setting
    o.d_lr = 1e-4
    o.b1 = 0.9
    o.b2 = 0.999
    o.warmup_steps = 0
    o.grad_clip = 0.0             # global-norm clipping; 0 = off
    o.ema_decay = 0.999           # EMA of the weights for evaluation and sampling; 0 = off

    c.sample = s = ml_collections.ConfigDict()
    s.temperature = 1.0           # z ~ N(0, temperature^2 I) (sample.py --temperature overrides it)
    s.num_fixed = 16              # fixed-noise samples drawn at every image step (the evolution montage)
    return c


def apply_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Seconds on one CPU core: synthetic 16x16 data, width 8, two levels, a 16-d latent."""
    c.data.source = "synthetic"
    c.data.image_size = 16
    c.data.synthetic_size = 64
    c.data.shuffle_buffer = 64
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.z_channels = 4
    c.model.latent_dim = 16
    c.model.class_dim = 4
    c.disc.ndf = 8
    c.disc.n_layers = 2
    c.loss.kl_warmup_steps = 2
    c.loss.perceptual_weight = 0.0
    c.optim.lr = 1e-3
    c.optim.ema_decay = 0.9
    c.sample.num_fixed = 8
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.ckpt_every = 2
    c.train.image_every = 2
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.train.num_image_rows = 4
    return base.apply_tiny_diffusion(c)  # --stage diffusion over a spatial-latent tiny VAE
