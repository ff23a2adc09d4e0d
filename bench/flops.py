"""FLOPs of one stage-1 and one prior train step of a config, from XLA's cost analysis of the lowered
program (nothing is compiled or run, so it is quick on any machine); prints one JSON line.

    python bench/flops.py --config configs/flowers256.py [--config.KEY=VALUE ...]

Model-FLOP utilisation on an accelerator is `stage1_step_tflop / median_step_s / peak`. The count is
the same on every backend (it is taken before backend-specific lowering of convolutions and matmuls to
library calls, which the compiled program's cost analysis on GPU counts as zero), and `bench/train_step.py`
and `bench/prior.py` report it too where the backend gives it.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

from absl import app  # noqa: E402

from bench.timing import step_flops  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)


def main(_):
    import jax
    import numpy as np

    from vqgan_jax import cli
    from vqgan_jax.data.tokens import PriorTokens
    from vqgan_jax.train import parallel
    from vqgan_jax.trainers.ar_prior import PriorSetup, make_gpt2_config
    from vqgan_jax.trainers.vqgan import VQGANSetup
    cli.quiet_logs()
    cfg = _CONFIG.value
    cfg.loss.disc_start = 0  # count the discriminator's work, as bench/train_step.py --disc on times it
    key = jax.random.PRNGKey(0)

    def spec(shape, dtype, sharding):
        return jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)

    vq = VQGANSetup(cfg)
    bs, s = cfg.train.batch_size, cfg.data.image_size
    sh = parallel.batch_sharding(vq.mesh)
    batch = {"image": spec((bs, s, s, 3), np.float32, sh), "label": spec((bs,), np.int32, sh)}
    consts = jax.eval_shape(lambda: vq.consts) if cfg.loss.perceptual_weight > 0 else {}
    stage1 = step_flops(vq._step_jit, vq.abstract_state(), batch, key, consts)

    p = cfg.prior
    grid = s // 2 ** (len(cfg.model.ch_mult) - 1)
    tokens = PriorTokens(num_codes=cfg.quantizer.num_codes, num_classes=0)
    prior = PriorSetup(p, tokens, make_gpt2_config(p, tokens, 1 + grid * grid), ops=cfg.ops)
    pb = {"ids": spec((p.batch_size, grid * grid), np.int32, sh), "label": spec((p.batch_size,), np.int32, sh)}
    prior_flops = step_flops(prior.step, prior.abstract_state(), pb, key)
    print(json.dumps({
        "config": cfg.name, "stage1_batch": bs, "image_size": s, "perceptual_weight": cfg.loss.perceptual_weight,
        "stage1_step_tflop": round(stage1 / 1e12, 4) if stage1 else None,
        "prior_batch": p.batch_size, "prior_tokens": grid * grid,
        "prior_step_tflop": round(prior_flops / 1e12, 4) if prior_flops else None}))


if __name__ == "__main__":
    app.run(main)
