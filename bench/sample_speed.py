"""Seconds per 64 generated images of one of a run's generators, after one warm-up call that compiles.

    python bench/sample_speed.py --workdir runs/f64 --prior prior          # GPT-2, KV cache
    python bench/sample_speed.py --workdir runs/f64 --prior diffusion --steps 10,25,50
    python bench/sample_speed.py --workdir runs/vae64 --prior vae

Times `sampling.generators.generate` (loading the weights, sampling, decoding to uint8 pixels: the path
`sample.py` and the evaluation use) for --num images in batches of --batch_size, and prints one JSON line per setting:
{"prior", "steps", "num", "batch_size", "seconds_per_64"}.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process()

from absl import app, flags  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder.")
_PRIOR = flags.DEFINE_string("prior", None, "Generator name (prior, diffusion, vae, dcgan; default: the run's own).")
_STEPS = flags.DEFINE_list("steps", [], "Diffusion only: sampling step counts to time.")
_NUM = flags.DEFINE_integer("num", 64, "Images per timed call.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Images per sampling batch (the evaluation's 16).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    del argv
    from vqgan_jax import cli
    cli.quiet_logs()

    def go():
        from vqgan_jax.sampling import generators
        name = generators.resolve(_WORKDIR.value, _PRIOR.value)
        settings = [{"steps": int(s)} for s in _STEPS.value] or [{}]
        for options in settings:
            generators.generate(_WORKDIR.value, name, _BATCH.value, _SEED.value, _BATCH.value, **options)  # compile
            t0 = time.perf_counter()
            generators.generate(_WORKDIR.value, name, _NUM.value, _SEED.value, _BATCH.value, **options)
            seconds = time.perf_counter() - t0
            print(json.dumps({"prior": name, "steps": options.get("steps"), "num": _NUM.value,
                              "batch_size": _BATCH.value, "seconds_per_64": seconds * 64 / _NUM.value}), flush=True)

    raise SystemExit(cli.run_cli(go))


if __name__ == "__main__":
    from vqgan_jax.cli import parse_flags
    app.run(main, flags_parser=parse_flags)
