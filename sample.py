"""Pictures from a run folder: new images from its generator, reconstructions, or the learned codebook.

    python sample.py --workdir runs/f64 --num 64 --out samples/ --seed 0 \
        --temperature 1.0 --top_k 100 --top_p 0.95 [--label 12 --cfg_scale 2.0]
    python sample.py --workdir runs/f64 --prior diffusion --num 64 --out samples/ --seed 0 \
        --sampler dpmpp2m --steps 25 [--eta 0.0] [--label 3 --cfg_scale 3.0]
    python sample.py --workdir runs/vae64 --num 64 --out samples/ [--temperature 0.8] [--label 3]
    python sample.py --workdir runs/vae64 --interpolate a.jpg b.jpg --steps 10 --out strip.png [--slerp]
    python sample.py --workdir runs/vae64 --interpolate_classes 3,7 --steps 10 --out classes.png [--slerp]
    python sample.py --workdir runs/vae64 --latent_map --out map.png
    python sample.py --workdir runs/f64 --reconstruct path/to/images --out recon.png
    python sample.py --workdir runs/f64 --codebook --out codebook.png
    python sample.py --workdir runs/f64 --training_pictures --out runs/f64/pictures
    python sample.py --workdir runs/dcgan --num 64 --out samples/ --seed 0     # a DCGAN run [--label 3]

Everything is rebuilt from the run folder (config.json + checkpoints). The generator is the run's own
(`vqgan_jax.sampling.generators`: the GPT-2 prior when DIR/prior exists, else the diffusion prior, the
DCGAN or the VAE), or the one named by --prior (gpt2 | diffusion | dcgan | vae). Sampling settings left
out default to the part's config (prior.temperature, prior.top_k, ...; diffusion.sampler, sample_steps,
eta, cfg_scale; the VAE's sample.temperature); a setting the generator does not take (e.g. --top_k for a
VAE) is an error.
"""
from vqgan_jax.cli import prepare_process

prepare_process()  # before anything imports jax (XLA flags, compilation cache; see vqgan_jax/cli.py)

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder written by train.py.")
_OUT = flags.DEFINE_string("out", None, "Output folder (sampling) or PNG file (--reconstruct, --codebook).")
_NUM = flags.DEFINE_integer("num", 16, "Number of images to sample.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed: the same seed gives the same images.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images sampled per batch.")
_TEMPERATURE = flags.DEFINE_float("temperature", None, "Softmax temperature (0 = greedy).")
_TOP_K = flags.DEFINE_integer("top_k", None, "Keep the k most likely codes (0 = off).")
_TOP_P = flags.DEFINE_float("top_p", None, "Nucleus sampling mass (1 = off).")
_LABEL = flags.DEFINE_integer("label", None, "Class id for a class-conditional prior.")
_CFG = flags.DEFINE_float("cfg_scale", None, "Classifier-free guidance scale (with --label; 1 = off).")
_PRIOR = flags.DEFINE_enum("prior", None, ["gpt2", "prior", "diffusion", "dcgan", "vae"],
                           "Which generator samples: the GPT-2 prior over tokens (DIR/prior), the latent diffusion "
                           "(DIR/diffusion), the DCGAN or the VAE; default: the run's own (the GPT-2 prior first).")
_SAMPLER = flags.DEFINE_enum("sampler", None, ["ddpm", "ddim", "dpmpp2m"], "Diffusion sampler (--prior diffusion).")
_STEPS = flags.DEFINE_integer("steps", None, "Diffusion sampling steps (--prior diffusion; default "
                              "diffusion.sample_steps), or --interpolate points from one image to the other (10).")
_ETA = flags.DEFINE_float("eta", None, "DDIM noise: 0 deterministic, 1 = DDPM's variance (--sampler ddim).")
_RANDOM_FIRST = flags.DEFINE_bool("random_first_token", False,
                                  "Set the first code at random and let the prior fill in the rest (the Flowers102 study's recipe).")
_RECONSTRUCT = flags.DEFINE_string("reconstruct", None, "An image file or folder to reconstruct.")
_CODEBOOK = flags.DEFINE_bool("codebook", False, "Draw the learned codebook with a usage histogram.")
_TRAINING = flags.DEFINE_bool("training_pictures", False, "Write the training pictures (evolution montage and "
                              "loss curves of each stage) into the --out folder.")
_INTERPOLATE = flags.DEFINE_string("interpolate", None, "VAE: an image file to interpolate from; the image to "
                                   "interpolate to follows it (--interpolate a.jpg b.jpg).")
_SLERP = flags.DEFINE_bool("slerp", False, "--interpolate: spherical instead of linear interpolation.")
_CLASSES = flags.DEFINE_list("interpolate_classes", None, "VAE: two class ids A,B: a strip between the mean "
                              "latents of their held-out images (--steps, --slerp).")
_LATENT_MAP = flags.DEFINE_bool("latent_map", False, "VAE: draw the held-out posterior means in 2-D (PCA), "
                                "coloured by class, into the --out PNG.")
flags.mark_flags_as_required(["workdir", "out"])


def _generator():
    """The generator to sample from: --prior's (gpt2 is the GPT-2 prior's name) or the run's own."""
    from vqgan_jax.sampling import generators
    wanted = {"gpt2": "prior"}.get(_PRIOR.value, _PRIOR.value)
    return generators.resolve(_WORKDIR.value, wanted)


def main(argv):
    extra = argv[1:]
    if _INTERPOLATE.value and len(extra) == 1:
        extra = []  # --interpolate a.jpg b.jpg: the second image
    from vqgan_jax import cli
    cli.reject_extra_args([argv[0], *extra])
    cli.quiet_logs()

    def go():
        from vqgan_jax.errors import UserError
        if _NUM.value < 1 or _BATCH.value < 1:
            raise UserError(f"--num={_NUM.value} and --batch_size={_BATCH.value} must be at least 1")
        # Checked before any model is loaded or image drawn, so a bad --out costs nothing.
        cli.check_writable(_OUT.value, is_dir=not (_RECONSTRUCT.value or _CODEBOOK.value))
        if _RECONSTRUCT.value:
            from vqgan_jax.viz import reconstructions
            print(reconstructions.write_reconstructions(_WORKDIR.value, _RECONSTRUCT.value, _OUT.value))
        elif _CODEBOOK.value:
            from vqgan_jax.viz import codebook
            print(codebook.write_codebook(_WORKDIR.value, _OUT.value))
        elif _INTERPOLATE.value:
            from vqgan_jax.errors import UserError
            from vqgan_jax.sampling import vae
            if len(argv) != 2:
                raise UserError("--interpolate takes two image files: --interpolate a.jpg b.jpg")
            print(vae.write_interpolation(_WORKDIR.value, _INTERPOLATE.value, argv[1], _OUT.value, steps=_STEPS.value or 10,
                                          spherical=_SLERP.value, label=_LABEL.value))
        elif _CLASSES.value:
            from vqgan_jax.errors import UserError
            from vqgan_jax.eval import vae_pictures
            try:
                a, b = (int(v) for v in _CLASSES.value)
            except ValueError:
                raise UserError("--interpolate_classes takes two class ids: --interpolate_classes 3,7") from None
            print(vae_pictures.write_class_interpolation(_WORKDIR.value, a, b, _OUT.value, steps=_STEPS.value or 10,
                                                         spherical=_SLERP.value))
        elif _LATENT_MAP.value:
            from vqgan_jax.eval import vae_pictures
            print(vae_pictures.write_latent_map(_WORKDIR.value, _OUT.value))
        elif _TRAINING.value:
            from vqgan_jax.viz import training
            for name, path in training.write_training_pictures(_WORKDIR.value, _OUT.value).items():
                print(f"{name}: {path}")
        elif (name := _generator()) not in (None, "prior"):
            from vqgan_jax.sampling import generators
            given = {"temperature": _TEMPERATURE.value, "top_k": _TOP_K.value, "top_p": _TOP_P.value,
                     "label": _LABEL.value, "cfg_scale": _CFG.value, "sampler": _SAMPLER.value,
                     "steps": _STEPS.value, "eta": _ETA.value, "random_first_token": _RANDOM_FIRST.value or None}
            paths = generators.write_samples(_WORKDIR.value, _OUT.value, name, _NUM.value, _SEED.value, _BATCH.value,
                                             **{k: v for k, v in given.items() if v is not None})
            print(f"wrote {len(paths)} images and grid.png to {_OUT.value} ({name})")
        else:
            from vqgan_jax.sampling import draw
            paths = draw.write_samples(
                _WORKDIR.value, _OUT.value, num=_NUM.value, seed=_SEED.value, batch_size=_BATCH.value,
                temperature=_TEMPERATURE.value, top_k=_TOP_K.value, top_p=_TOP_P.value, cfg_scale=_CFG.value,
                label=_LABEL.value, random_first_token=_RANDOM_FIRST.value)
            print(f"wrote {len(paths)} images and grid.png to {_OUT.value}")

    raise SystemExit(cli.run_cli(go))


if __name__ == "__main__":
    from vqgan_jax.cli import parse_flags
    app.run(main, flags_parser=parse_flags)
