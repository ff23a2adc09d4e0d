"""Evaluate a run folder, or compare two image folders, with one command; prints a table, writes JSON.

    python -m vqgan_jax.evaluate --workdir runs/f64 [--data_dir DIR | --split eval] [--prior NAME] \\
        [--num_samples 1000] [--out runs/f64/eval/eval.json] [--inception_weights FILE.npz]
    python -m vqgan_jax.evaluate --real DIR_A --fake DIR_B [--out eval.json]

A run folder gives held-out reconstruction metrics of its stage-1 part (VQGAN: PSNR, SSIM, L1, LPIPS,
codebook usage, perplexity, dead codes; VAE: the same plus negative ELBO, bits/dim, KL, active units), and
when it has a generator (the VQGAN's prior, the VAE, ...; --prior picks one), samples scored by the same
generation block for every generator: the Keras real-vs-fake CNN study's classifier, fd_vgg16 / kd_vgg16
and precision / recall on VGG16 features, and FID / KID / Inception Score when the Inception weights are
there (`python -m vqgan_jax.inception download`). Pictures go beside the JSON (default DIR/eval/). The work is done by
`vqgan_jax.eval.suite`; this module is only its command line.
"""
import os


def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "Run folder written by train.py.")
    flags.DEFINE_string("data_dir", None, "Evaluate on the held-out split of this image folder instead of "
                        "the run's own data (same file-name-hash split as training).")
    flags.DEFINE_enum("split", "eval", ["eval", "train"], "Which split: eval = held out (TFDS: its test split).")
    flags.DEFINE_integer("num_samples", 1000, "Images to sample from the prior (0 skips generation).")
    flags.DEFINE_integer("max_images", None, "Use at most this many real images.")
    flags.DEFINE_string("real", None, "Folder of real images (with --fake: compare two folders).")
    flags.DEFINE_string("fake", None, "Folder of generated images (with --real).")
    flags.DEFINE_integer("image_size", None, "--real/--fake: crop both to this size (default: the first real "
                         "image's short side).")
    flags.DEFINE_string("inception_weights", None, "FID Inception weights (.npz; default "
                        "~/.cache/vqgan_jax/inception_fid.npz).")
    flags.DEFINE_bool("fid", None, "Compute FID/KID/IS (default: when the Inception weights exist; --fid "
                      "makes missing weights an error).")
    flags.DEFINE_integer("classifier_epochs", 10, "Training epochs of the real-vs-fake classifier.")
    flags.DEFINE_integer("seed", 0, "Seed for sampling and the classifier.")
    flags.DEFINE_string("prior", None, "Which generator of the run makes the samples (prior, vae, ...; default: "
                        "the run's own, picked from its part folders).")
    flags.DEFINE_string("out", None, "JSON output (default DIR/eval/eval.json, or ./eval.json for --real/--fake).")
    return flags.FLAGS


def main(argv):
    from absl import flags
    from vqgan_jax import cli
    cli.reject_extra_args(argv)
    cli.quiet_logs()
    f = flags.FLAGS

    def go():
        from vqgan_jax.errors import UserError
        from vqgan_jax.eval import suite as evaluation
        if f.real or f.fake:
            if not (f.real and f.fake):
                raise UserError("--real and --fake go together (two image folders)")
            out = f.out or "eval.json"
            cli.check_writable(out, is_dir=False)
            result = evaluation.compare_folders(
                f.real, f.fake, image_size=f.image_size, inception_weights=f.inception_weights, fid=f.fid,
                max_images=f.max_images, classifier_epochs=f.classifier_epochs, seed=f.seed,
                out_dir=os.path.dirname(os.path.abspath(out)))
        elif f.workdir:
            out = f.out or os.path.join(f.workdir, "eval", "eval.json")
            cli.check_writable(out, is_dir=False)
            result = evaluation.evaluate_run(
                f.workdir, data_dir=f.data_dir, split=f.split, num_samples=f.num_samples,
                max_images=f.max_images, inception_weights=f.inception_weights, fid=f.fid,
                classifier_epochs=f.classifier_epochs, seed=f.seed, out_dir=os.path.dirname(os.path.abspath(out)),
                generator=f.prior)
        else:
            raise UserError("give --workdir DIR (a run folder) or --real DIR_A --fake DIR_B")
        print(evaluation.format_table(result))
        print(f"wrote {evaluation.write_json(result, out)}")

    raise SystemExit(cli.run_cli(go))


if __name__ == "__main__":
    from vqgan_jax.cli import prepare_process
    prepare_process()  # before anything imports jax (XLA flags, compilation cache)
    from absl import app

    from vqgan_jax.cli import parse_flags
    _define_flags()
    app.run(main, flags_parser=parse_flags)
