"""Timing shared by the bench scripts: compile + warm-up, then the median of timed train steps."""
import time


def time_steps(step, state, batch, key, steps: int):
    """Runs `step(state, batch, rng)`: once to compile (timed), once to warm up, `steps` times timed.

    Returns (state, last metrics, compile seconds, list of per-step seconds); every call is waited for.
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
        t = time.perf_counter()
        state, m = step(state, batch, jax.random.fold_in(key, i + 2))
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t)
    return state, m, compile_s, times
