"""Times a config's first stage-1 step (compile + one step) with no compilation cache, on N simulated CPU
devices; prints one JSON line. For sizing the test suite, whose tiny runs are compile-bound.

    python bench/compile_time.py --config configs/demo.py:tiny --devices 8 [--bias_order one_chain] [--guard_chunk N]

--bias_order one_chain keeps the XLA:CPU bias gradients a single halving chain over every row even when the
batch is split over devices (the order used before 2026-12-03; `backends.xla_cpu.sums.bias_grad`).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _devices_from_argv() -> int:
    for i, a in enumerate(sys.argv):
        if a == "--devices":
            return int(sys.argv[i + 1])
        if a.startswith("--devices="):
            return int(a.split("=", 1)[1])
    return 8


# The device count must be in XLA_FLAGS before jax is imported.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + f" --xla_force_host_platform_device_count={_devices_from_argv()}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
from vqgan_jax.cli import prepare_process, quiet_logs  # noqa: E402

prepare_process(compilation_cache=False)
quiet_logs()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("devices", 8, "Simulated CPU devices of the mesh.")
_ORDER = flags.DEFINE_enum("bias_order", "auto", ["auto", "one_chain"], "Bias-gradient order on several devices.")
_GUARD_CHUNK = flags.DEFINE_integer("guard_chunk", 0, "Also time the training loop's non-finite guard on the "
                                    "stage-1 state with runs of at most this many elements (1: one reduction "
                                    "per leaf; 0: skip).")
flags.mark_flags_as_required(["config"])


def main(_):
    import jax
    import numpy as np
    from vqgan_jax import backends
    from vqgan_jax.data import synthetic
    from vqgan_jax.train import parallel
    from vqgan_jax.trainers.vqgan import VQGANSetup
    if _ORDER.value == "one_chain":
        backends._sharded = lambda mesh: False
    c = _CONFIG.value
    n, size = int(c.train.batch_size), int(c.data.image_size)
    imgs, labels = synthetic.synthetic_flowers(size, n, 0)
    batch = {"image": imgs.astype(np.float32) / 127.5 - 1.0, "label": np.asarray(labels, np.int32)}
    setup = VQGANSetup(c, parallel.make_mesh())
    t0 = time.perf_counter()
    state = setup.init_state(0)
    t1 = time.perf_counter()
    state, m = setup.step(state, parallel.global_batch(batch, setup.mesh), jax.random.PRNGKey(0))
    jax.block_until_ready(m)
    t2 = time.perf_counter()
    out = {"config": c.name, "devices": jax.device_count(), "ops": setup.ops,
           "bias_order": _ORDER.value, "init_s": round(t1 - t0, 2), "first_step_s": round(t2 - t1, 2)}
    if _GUARD_CHUNK.value > 0:
        from vqgan_jax.train.loop import _nonfinite_count
        t0 = time.perf_counter()
        guard = _nonfinite_count.lower(state, chunk=_GUARD_CHUNK.value).compile()
        t1 = time.perf_counter()
        int(guard(state))
        t2 = time.perf_counter()
        out.update(guard_chunk=_GUARD_CHUNK.value, state_elements=sum(x.size for x in jax.tree.leaves(state)),
                   guard_compile_s=round(t1 - t0, 2), guard_run_s=round(t2 - t1, 3),
                   guard_temp_mib=round(guard.memory_analysis().temp_size_in_bytes / 2**20, 1))
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
