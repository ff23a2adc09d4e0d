"""Data parallelism over a `jax.sharding.Mesh` with one `data` axis (no pmap).

The batch is sharded along its leading axis over every device of every host; the train state is
replicated. Under `jax.jit` with these shardings, means and histograms over the batch are global
(XLA inserts the all-reduces), so quantizer statistics and losses never see only one device's slice.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vqgan_jax.errors import UserError

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    """A 1-D mesh over all devices (all hosts), axis name `data`."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices).reshape(-1), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`, every other axis whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, mesh: Mesh) -> None:
    n = mesh.devices.size
    if global_batch_size % n:
        raise UserError(
            f"train.batch_size={global_batch_size} is not divisible by the {n} devices: "
            f"set --config.train.batch_size to a multiple of {n}")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Builds global arrays from this process's slice of the batch (multi-host safe).

    local: dict of numpy arrays whose leading axis is the per-process batch (global / process_count).
    """
    sharding = batch_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def jit_step(step_fn: Callable, mesh: Mesh, state_sharding: Any) -> Callable:
    """Jits a pure `(state, batch, rng) -> (state, metrics)` step once: state replicated and donated,
    batch sharded on `data`, metrics replicated scalars."""
    return jax.jit(
        step_fn,
        in_shardings=(state_sharding, batch_sharding(mesh), replicated(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )


def replicate_tree(tree: Any, mesh: Mesh) -> Any:
    """Places a host pytree on every device (fully replicated)."""
    return jax.device_put(tree, replicated(mesh))


def run_once_jitted(fn: Callable, *args, out_shardings=None, compiler_options: dict | None = None):
    """Compiles `fn` and runs it once (initialisers). compiler_options: e.g. the backend's
    `backends.init_compiler_options(kind)`, which skip optimisations a one-off program does not need."""
    lowered = jax.jit(fn, out_shardings=out_shardings).lower(*args)
    return lowered.compile(compiler_options=compiler_options)(*args)



_BARRIERS = [0]


def barrier(name: str, timeout_s: float = 3600.0) -> None:
    """Waits until every process of a multi-process job reaches this point (a no-op in one process).

    Uses the jax.distributed coordination service's barrier, not a collective: CPU collectives (gloo) give
    up after a fixed time, while a process may compile for minutes longer than its peers.
    """
    if jax.process_count() == 1:
        return
    from jax._src import distributed  # the service's client; no public accessor for its barrier
    _BARRIERS[0] += 1
    key = f"vqgan_jax:{name}:{_BARRIERS[0]}"
    client = distributed.global_state.client
    if client is None:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(key)
    else:
        client.wait_at_barrier(key, timeout_in_ms=int(timeout_s * 1000))
