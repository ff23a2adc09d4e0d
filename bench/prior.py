"""Times the stage-2 prior of a config: training tokens/s and sampling with and without the KV cache.

    python bench/prior.py --config configs/flowers64.py [--steps 10] [--sample_reps 3] [--no_cache_reps 1]

Prints one JSON line. Training: the full prior step (forward, cross-entropy, backward, AdamW) on a
global batch of prior.batch_size grids of random codes. Sampling: prior.batch_size sequences of the
full grid (256 tokens for flowers64) from a start token, top-k 100, temperature 1; `cached` runs the
KV-cache sampler, `no_cache` recomputes the whole prefix at every step. The peer's figures come from
shared/bench-peer/taming_gpt.py on the same sizes.
"""
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

from absl import app, flags  # noqa: E402

from bench.timing import step_flops, time_steps, utilisation  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed training steps (after 2 warm-up steps).")
_REPS = flags.DEFINE_integer("sample_reps", 3, "Timed cached sampling calls (after one warm-up).")
_NOCACHE = flags.DEFINE_integer("no_cache_reps", 1, "Timed no-cache sampling calls (after one warm-up); 0 skips.")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak for MFU (TFLOP/s); 0 = bf16 dense peak by device kind.")
_TOP_K = flags.DEFINE_integer("top_k", 100, "top-k for sampling.")
flags.mark_flags_as_required(["config"])


def timed(fn, reps):
    import jax
    jax.block_until_ready(fn())  # compile + warm up
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
    return ts


def main(_):
    import jax
    import numpy as np

    from vqgan_jax import backends, cli
    from vqgan_jax.data.tokens import PriorTokens
    from vqgan_jax.models.gpt2 import GPT2LMHeadModel
    from vqgan_jax.sampling import prior as prior_sampling
    from vqgan_jax.train import parallel
    from vqgan_jax.trainers.ar_prior import PriorSetup, make_gpt2_config
    cli.quiet_logs()
    cfg = _CONFIG.value
    p = cfg.prior
    grid = cfg.data.image_size // 2 ** (len(cfg.model.ch_mult) - 1)
    t_len = grid * grid
    tokens = PriorTokens(num_codes=cfg.quantizer.num_codes, num_classes=0)
    setup = PriorSetup(p, tokens, make_gpt2_config(p, tokens, 1 + t_len), ops=cfg.ops)
    state = setup.init_state(0)
    rng = np.random.default_rng(0)
    host = {"ids": rng.integers(0, tokens.num_codes, (p.batch_size, t_len)).astype(np.int32),
            "label": np.zeros((p.batch_size,), np.int32)}
    batch = parallel.global_batch(host, setup.mesh)
    key = jax.random.PRNGKey(0)
    state, m, compile_s, times = time_steps(setup.step, state, batch, key, _STEPS.value)
    flops = step_flops(setup.step, state, batch, key)
    step_s = statistics.median(times)
    dev = jax.devices()[0]

    model = GPT2LMHeadModel(setup.gpt2_config, **backends.gpt2_layers(setup.ops))
    n = p.batch_size
    sample = lambda use_cache: lambda: prior_sampling.sample_grids(  # noqa: E731
        model, state.params, tokens, (grid, grid), n, key, top_k=_TOP_K.value, use_cache=use_cache,
        chunk_len=backends.decode_chunk_len(setup.ops))
    cached = timed(sample(True), _REPS.value)
    no_cache = timed(sample(False), _NOCACHE.value) if _NOCACHE.value > 0 else []
    out = {
        "config": cfg.name, "device": f"{dev.platform}:{dev.device_kind}", "num_devices": len(jax.devices()),
        "n_layer": p.n_layer, "n_head": p.n_head, "n_embd": p.n_embd, "batch_size": p.batch_size,
        "seq_len": t_len, "train_compile_s": round(compile_s, 2), "train_step_s": round(step_s, 4),
        "train_tokens_per_sec": round(p.batch_size * t_len / step_s, 1), "dtype": p.dtype,
        **{f"train_{k}": v for k, v in utilisation(flops, step_s, dev.device_kind, _PEAK.value).items()},
        "sample_cached_s": round(statistics.median(cached), 3),
        "sample_cached_images_per_sec": round(n / statistics.median(cached), 2),
        "sample_no_cache_s": round(statistics.median(no_cache), 3) if no_cache else None,
        "sample_no_cache_images_per_sec": round(n / statistics.median(no_cache), 3) if no_cache else None,
        "top_k": _TOP_K.value, "host": platform.node(), "cpus": os.cpu_count(), "jax": jax.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "ops": setup.ops,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
