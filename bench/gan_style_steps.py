"""Time per DCGAN train step and per style-transfer step on the current device; prints JSON lines.

    python bench/gan_style_steps.py [--dcgan mnist,flowers64] [--style_sizes 128,256] [--steps 5]

DCGAN: the full step (G forward, D on real and fake, G through the updated D, both Adam updates) of
configs/dcgan/<name>.py at its batch size, on random data (the cost does not depend on it). Style
transfer: seconds per optimiser step of one square image of each size with Adam and with L-BFGS (whose
line search may evaluate VGG16 several times in one step), after a compile-and-warm-up call.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles, as bench/README.md reports them

import importlib  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.timing import time_steps  # noqa: E402


def device() -> dict:
    d = jax.devices()[0]
    return {"device": d.device_kind, "platform": d.platform, "devices": jax.device_count(),
            "cpu": platform.processor() or platform.machine()}


def bench_dcgan(name: str, steps: int) -> dict:
    from vqgan_jax.train import parallel
    from vqgan_jax.trainers.dcgan_step import DCGANSetup
    c = importlib.import_module(f"configs.dcgan.{name}").get_config()
    c.unlock()
    c.data.num_classes = 0
    setup = DCGANSetup(c)
    b, s, ch = c.train.batch_size, c.data.image_size, c.data.channels
    rng = np.random.default_rng(0)
    batch = parallel.global_batch({"image": rng.uniform(-1, 1, (b, s, s, ch)).astype(np.float32),
                                   "label": np.zeros((b,), np.int32)}, setup.mesh)
    _, _, compile_s, times = time_steps(setup.step, setup.init_state(0), batch, jax.random.PRNGKey(0), steps)
    sec = statistics.median(times)
    return {"bench": "dcgan_step", "config": name, "image_size": s, "channels": ch, "batch": b,
            "compile_s": round(compile_s, 2), "sec_per_step": round(sec, 4), "images_per_sec": round(b / sec, 1)}


def bench_style(size: int, optimizer: str, steps: int) -> dict:
    from vqgan_jax.trainers import style as st
    engine = st.StyleTransfer()
    rng = np.random.default_rng(0)
    content = rng.uniform(0, 1, (engine.mesh.devices.size, size, size, 3)).astype(np.float32)
    style = rng.uniform(0, 1, (1, size, size, 3)).astype(np.float32)
    s = st.StyleSettings(steps=1, optimizer=optimizer)
    t0 = time.perf_counter()
    engine.run(content, style, s)  # compile + one step
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    engine.run(content, style, st.StyleSettings(steps=steps, optimizer=optimizer))
    total = time.perf_counter() - t0
    return {"bench": "style_step", "size": size, "optimizer": optimizer, "images": len(content),
            "first_call_s": round(compile_s, 2), "sec_per_step": round(total / steps, 4)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dcgan", default="mnist,flowers64")
    p.add_argument("--style_sizes", default="128,256")
    p.add_argument("--optimizers", default="adam,lbfgs")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    info = device()
    for name in filter(None, args.dcgan.split(",")):
        print(json.dumps({**bench_dcgan(name, args.steps), **info}), flush=True)
    for size in filter(None, args.style_sizes.split(",")):
        for opt in filter(None, args.optimizers.split(",")):
            print(json.dumps({**bench_style(int(size), opt, args.steps), **info}), flush=True)


if __name__ == "__main__":
    main()
