"""Times the full stage-1 step (G + D) of a config on the current device; prints one JSON line.

FLOPs per step come from XLA's cost analysis of the lowered step (see bench/timing.py); MFU divides the achieved FLOP/s by
the device's dense bf16 peak (`--peak_tflops` to override).

    python bench/train_step.py --config configs/flowers64.py [--config.loss.perceptual_weight=0] \
        [--steps 10] [--disc on|off]

The discriminator is switched on from step 0 (`--disc on`, the default) so the timed step does all of
its work: autoencoder forward/backward, LPIPS when enabled, D forward/backward on real and fake, the
adaptive weight and both optimizer updates. Data is random (the step's cost does not depend on it).
"""
import json
import os
import platform
import resource
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

from absl import app, flags  # noqa: E402

from bench.timing import step_flops, time_steps, utilisation  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (after 2 warm-up steps).")
_PEAK = flags.DEFINE_float("peak_tflops", 0.0, "Device peak for MFU (TFLOP/s); 0 = bf16 dense peak by device kind.")
_DISC = flags.DEFINE_enum("disc", "on", ["on", "off"], "Discriminator on from step 0, or off (before disc_start).")
flags.mark_flags_as_required(["config"])


def main(_):
    import jax
    import numpy as np

    from vqgan_jax import cli
    from vqgan_jax.train import parallel
    from vqgan_jax.trainers.vqgan import VQGANSetup
    cli.quiet_logs()
    cfg = _CONFIG.value
    cfg.loss.disc_start = 0 if _DISC.value == "on" else 10**9
    setup = VQGANSetup(cfg)
    state = setup.init_state(0)
    bs, s = cfg.train.batch_size, cfg.data.image_size
    rng = np.random.default_rng(0)
    host = {"image": rng.uniform(-1, 1, (bs, s, s, 3)).astype(np.float32), "label": np.zeros((bs,), np.int32)}
    batch = parallel.global_batch(host, setup.mesh)
    key = jax.random.PRNGKey(0)

    faults = []
    state, m, compile_s, times = time_steps(setup.step, state, batch, key, _STEPS.value, faults)
    flops = step_flops(setup._step_jit, state, batch, key, setup.consts)
    med = statistics.median(times)
    dev = jax.devices()[0]
    stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
    peak = (stats or {}).get("peak_bytes_in_use")
    out = {
        "config": cfg.name, "device": f"{dev.platform}:{dev.device_kind}", "num_devices": len(jax.devices()),
        "batch_size": bs, "image_size": s, "perceptual_weight": cfg.loss.perceptual_weight, "disc": _DISC.value,
        "compile_s": round(compile_s, 2), "median_step_s": round(med, 4),
        "min_step_s": round(min(times), 4), "images_per_sec": round(bs / med, 2),
        "step_s": [round(t, 3) for t in times], "minor_faults_per_step": int(statistics.median(faults)),
        "peak_device_mem_mb": round(peak / 2**20, 1) if peak else None,
        "peak_host_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "dtype": cfg.model.dtype, **utilisation(flops, med, dev.device_kind, _PEAK.value),
        "disc_on_metric": float(m["disc_on"]), "compiles": setup.compile_count(),
        "host": platform.node(), "cpus": os.cpu_count(), "jax": jax.__version__,
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""), "ops": setup.ops,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
