"""Timing shared by the bench scripts: compile + warm-up, then the median of timed train steps."""
import resource
import time


def time_steps(step, state, batch, key, steps: int, faults: list | None = None):
    """Runs `step(state, batch, rng)`: once to compile (timed), once to warm up, `steps` times timed.

    Returns (state, last metrics, compile seconds, list of per-step seconds); every call is waited for.
    faults: a list to append each timed step's minor page faults to (fresh 4 KiB pages the kernel had to
    zero, the cost huge pages remove: bench/README.md, "Huge pages").
    """
    import jax
    t0 = time.perf_counter()
    state, m = step(state, batch, jax.random.fold_in(key, 0))
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    state, m = step(state, batch, jax.random.fold_in(key, 1))
    jax.block_until_ready(m)
    times = []
    for i in range(steps):
        f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = time.perf_counter()
        state, m = step(state, batch, jax.random.fold_in(key, i + 2))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
        if faults is not None:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f)
    return state, m, compile_s, times


# Dense bf16 tensor-core peaks (vendor spec sheets, TFLOP/s) by jax `device_kind`, for model-FLOP
# utilisation. MFU is reported against this peak whatever the compute dtype, as is usual.
_PEAK_BF16_TFLOPS = {"NVIDIA H100 80GB HBM3": 989.4, "NVIDIA H200": 989.4, "NVIDIA A100-SXM4-80GB": 312.0,
                     "NVIDIA A100-SXM4-40GB": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0, "TPU v5p": 459.0}


def step_flops(jitted, *args) -> float | None:
    """FLOPs of one call of `jitted(*args)` from XLA's cost analysis of the lowered (unoptimised) program,
    or None if the backend gives none. Counted before compilation because after it GPU convolutions and
    matmuls are library calls (cuDNN, cuBLAS) that the compiled program's cost analysis counts as zero.
    Nothing is compiled and the arguments are not consumed."""
    try:
        ca = jitted.lower(*args).cost_analysis()
    except Exception:  # noqa: BLE001 -- some backends have no cost model; MFU is then left out
        return None
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    flops = float((ca or {}).get("flops", 0.0))
    return flops if flops > 0 else None


def utilisation(flops: float | None, seconds: float, device_kind: str, peak_tflops: float = 0.0) -> dict:
    """{'model_tflops_per_sec', 'peak_bf16_tflops', 'mfu'} for one step of `flops` taking `seconds`."""
    peak = peak_tflops or _PEAK_BF16_TFLOPS.get(device_kind)
    achieved = flops / seconds / 1e12 if flops else None
    return {"step_tflop": round(flops / 1e12, 4) if flops else None,
            "model_tflops_per_sec": round(achieved, 2) if achieved else None,
            "peak_bf16_tflops": peak, "mfu": round(achieved / peak, 4) if achieved and peak else None}
