"""The training loop both stages share: stepping, logging, checkpoints, resume, signals, NaN stops.

A stage supplies a jitted step, its initial (or restored) state, an iterator of host batches and
hooks for its periodic extras (image grids, held-out evaluation). Everything else (how often to log,
save and stop, what to do on SIGTERM, how throughput is counted) lives here once, so the VQGAN and
prior trainers cannot drift apart.

What a stop leaves behind: SIGTERM/SIGINT save the current step and raise `Interrupted` (exit 143/130);
a NaN/inf loss or a non-finite parameter or optimizer moment raises `NonFiniteLoss` naming the last
finite checkpoint (a state is checked before every save, so no checkpoint ever holds NaN/inf); a lost
peer process raises `PeerLost` (exit 3).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import math
import signal
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp

from vqgan_jax.errors import Interrupted, PeerLost, UserError
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.train.parallel import barrier, global_batch

log = logging.getLogger("vqgan_jax")


class StopSignal:
    """Turns SIGTERM / SIGINT into a flag the loop checks between steps (TPU VMs get preempted)."""

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test runner thread): signals stay as they are
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C means "now"
        self.received = signum

    def __exit__(self, *exc):
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)
        return False


@dataclasses.dataclass
class LoopSpec:
    """What the shared loop needs from a stage.

    step_fn: jitted `(state, batch, rng) -> (state, metrics)` (state donated).
    batches: iterator of per-process numpy batches, already positioned at `start_step`.
    seed_key: the run's key; step s uses fold_in(seed_key, s).
    progress_keys: metric names shown on the progress line.
    items_per_step: images (or tokens) per step, for the throughput figure.
    on_log / on_image / on_eval: hooks `(step, state) -> dict of extra scalars | None`.
    """
    step_fn: Callable
    batches: Iterator[dict]
    seed_key: jax.Array
    mesh: Any
    num_steps: int
    log_every: int
    ckpt_every: int
    image_every: int = 0
    eval_every: int = 0
    progress_keys: tuple = ()
    items_per_step: int = 1
    rate_name: str = "images_per_sec"
    rate_unit: str = "img/s"
    finite_keys: tuple | None = None
    on_image: Callable | None = None
    on_eval: Callable | None = None
    compile_step: Callable | None = None  # (state, batch, rng) -> a compiled step; default: step_fn.lower


def _compiled_together(spec: LoopSpec, state, batch, rng) -> Callable:
    """Multi-process jobs: every process compiles the step ahead of time, then all wait at a barrier, so
    the first collective never waits on a peer that is still compiling (gloo's collectives time out)."""
    if spec.compile_step is not None:
        step = spec.compile_step(state, batch, rng)
    elif hasattr(spec.step_fn, "lower"):
        step = spec.step_fn.lower(state, batch, rng).compile()
    else:
        step = spec.step_fn
    barrier("step compiled")
    return step


def check_settings(prefix: str, *, num_steps: int, log_every: int, ckpt_every: int, keep_checkpoints: int,
                   image_every: int = 0, eval_every: int = 0) -> None:
    """Refuses loop settings that would lose the trained model or make no sense, in one line.

    prefix: the config section the keys live in ('train' or 'prior'), for the message.
    """
    rules = [("num_steps", num_steps, 0, ""), ("log_every", log_every, 1, ""),
             ("ckpt_every", ckpt_every, 1, " (the last step is always saved too)"),
             ("keep_checkpoints", keep_checkpoints, 1, " (0 would keep no trained model)"),
             ("image_every", image_every, 0, " (0 = off)"), ("eval_every", eval_every, 0, " (0 = off)")]
    for key, value, low, why in rules:
        if int(value) < low:
            raise UserError(f"{prefix}.{key}={value} must be >= {low}{why}: set --config.{prefix}.{key}")


# Leaves are laid end to end in runs of at most this many elements. XLA:CPU materialises each run, so
# runs this short keep the check's scratch memory where one reduction per leaf had it (flowers64 stage-1
# state: 83 MiB against 79 MiB; one run for all 20.8M elements: 140-159 MiB) and its speed (0.04-0.06 s).
NONFINITE_CHUNK = 1 << 20


@functools.partial(jax.jit, static_argnames="chunk")
def _nonfinite_count(tree, chunk: int = NONFINITE_CHUNK) -> jax.Array:
    """Number of NaN/inf entries over every floating-point leaf of a pytree (int32 scalar).

    One reduction per run of leaves laid end to end (in their widest float dtype, so no finite value
    overflows; a run holds at most `chunk` elements, or one larger leaf): one reduction per leaf made ~600
    small reductions of a VQGAN state, which XLA:CPU took about 3 s to compile against 1.2-1.7 s for the
    ~20 runs of the flowers64 state and 0.5-0.7 s for the tiny preset's one (bench/README.md).
    """
    leaves = [x for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)]
    if not leaves:
        return jnp.zeros((), jnp.int32)
    dtype = jnp.result_type(*leaves)
    groups, size = [[]], 0
    for x in leaves:
        if groups[-1] and size + x.size > chunk:
            groups.append([])
            size = 0
        groups[-1].append(jnp.ravel(x).astype(dtype))
        size += x.size
    counts = [jnp.sum(~jnp.isfinite(jnp.concatenate(group)), dtype=jnp.int32) for group in groups]
    return sum(counts[1:], counts[0])


def _last_good(ckpt: Checkpointer) -> str:
    ckpt.wait()
    step = ckpt.latest_step()
    if step is None:
        return "no checkpoint was saved before it"
    return f"the last finite checkpoint is step {step} in {ckpt.directory} (the same command resumes from it)"


def _due(step: int, every: int, last: int) -> bool:
    return every > 0 and (step % every == 0 or step == last)


def run(spec: LoopSpec, state: Any, start_step: int, ckpt: Checkpointer,
        writer: metrics_lib.MetricWriter) -> tuple[Any, dict]:
    """Runs steps start_step+1 .. num_steps (state.step counts completed updates).

    Returns (final state, last host metrics). Saves at every `ckpt_every` step, at the end, and on
    SIGTERM/SIGINT (then raises Interrupted); raises NonFiniteLoss on a NaN/inf loss or state, keeping
    the checkpoints (all finite) saved before; PeerLost when a collective with another process fails.
    """
    try:
        return _run(spec, state, start_step, ckpt, writer)
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() > 1:
            raise PeerLost(f"another process of this {jax.process_count()}-process job stopped "
                           f"({' '.join(str(e).split())[:200]}); rerun the whole job to resume from the last "
                           "checkpoint") from e
        raise


def _run(spec: LoopSpec, state: Any, start_step: int, ckpt: Checkpointer,
         writer: metrics_lib.MetricWriter) -> tuple[Any, dict]:
    throughput = metrics_lib.Throughput(start_step, spec.num_steps, spec.items_per_step)
    throughput.mark(start_step)
    last: dict = {}
    pending = None  # device metrics of the last step, fetched lazily
    step = start_step
    t_first = None
    step_fn = None
    with StopSignal() as stop:
        while step < spec.num_steps:
            try:
                host_batch = next(spec.batches)
            except StopIteration:
                log.warning("the data ran out at step %d", step)
                break
            batch = global_batch(host_batch, spec.mesh)
            rng = jax.random.fold_in(spec.seed_key, step)
            if step_fn is None:
                step_fn = _compiled_together(spec, state, batch, rng) if jax.process_count() > 1 else spec.step_fn
            state, pending = step_fn(state, batch, rng)
            step += 1
            if t_first is None:
                # The first step compiles: leave it out of the throughput figure.
                jax.block_until_ready(pending)
                throughput.mark(step)
                t_first = time.perf_counter()
            is_last = step == spec.num_steps
            stopping = stop.received is not None  # one snapshot: a signal may land at any moment
            want_log = _due(step, spec.log_every, spec.num_steps)
            want_ckpt = _due(step, spec.ckpt_every, spec.num_steps) or stopping
            if want_log or want_ckpt:
                # Metrics come to the host only here; a bad state is never checkpointed.
                host = {k: float(v) for k, v in jax.device_get(pending).items()}
                metrics_lib.check_finite(host, step, spec.finite_keys, last_good=_last_good(ckpt)
                                         if any(not _finite(host[k]) for k in host) else "")
                bad = int(_nonfinite_count(state))
                if bad:
                    raise metrics_lib.NonFiniteLoss(
                        f"{bad} non-finite parameter/optimizer value(s) after step {step}; the run stopped; "
                        f"{_last_good(ckpt)}: {metrics_lib.NAN_HINT}")
                last = host
            if want_log:
                rate, eta = throughput.mark(step)
                scalars = dict(last)
                if rate > 0:
                    scalars[spec.rate_name] = rate
                writer.write_scalars(step, scalars)
                if jax.process_index() == 0:
                    print(metrics_lib.progress_line(step, spec.num_steps, scalars, spec.progress_keys, rate, eta,
                                                    spec.rate_unit), flush=True)
            t_hooks = time.perf_counter()
            if spec.on_eval is not None and _due(step, spec.eval_every, spec.num_steps):
                extra = spec.on_eval(step, state) or {}
                if extra:
                    metrics_lib.check_finite(extra, step, last_good=_last_good(ckpt)
                                             if any(not _finite(v) for v in extra.values()) else "")
                    writer.write_scalars(step, extra)
                    last.update(extra)
            if spec.on_image is not None and _due(step, spec.image_every, spec.num_steps):
                spec.on_image(step, state)
            if want_ckpt:
                ckpt.save(step, state, force=is_last or stopping)
            throughput.exclude(time.perf_counter() - t_hooks)
            if stopping:
                break
    ckpt.wait()
    writer.flush()
    if stop.received is not None:
        name = signal.Signals(stop.received).name
        raise Interrupted(stop.received, f"{name} received: checkpoint saved at step {step}; run the same "
                                         "command to resume")
    return state, last


def _finite(v) -> bool:
    return math.isfinite(float(v))
