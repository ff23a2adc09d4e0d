"""One setup object (models, optimizers, jitted step) per configuration and mesh in a process.

A `VQGANSetup` or `PriorSetup` holds `jax.jit` objects. A new object traces its step again and loads
the compiled program again (from XLA's persistent cache at best); reusing the object skips both. Runs
that restart in the same process (a resumed run in a notebook, `--stage prior` after stage 1 in a
script, the tests) take the shared object: a second tiny stage-1 run on 2 CPU cores took 17 s with a
fresh setup and 10 s with the shared one.
"""
from __future__ import annotations

import collections
import json
from typing import Any, Callable, TypeVar

T = TypeVar("T")

MAX_SETUPS = 4  # a setup keeps its compiled programs (and LPIPS weights) alive: keep only the newest
_SETUPS: collections.OrderedDict = collections.OrderedDict()


def config_key(tree: Any) -> str:
    """A stable string for a config (ConfigDict, dict or dataclass of plain values)."""
    if hasattr(tree, "to_dict"):
        tree = tree.to_dict()
    return json.dumps(tree, sort_keys=True, default=repr)


def mesh_key(mesh) -> tuple:
    return tuple(int(d.id) for d in mesh.devices.flat), tuple(mesh.axis_names)


def shared(kind: str, key: Any, build: Callable[[], T]) -> T:
    """The object `build()` made for (kind, key) earlier in this process, or a new one (kept)."""
    k = (kind, key)
    if k in _SETUPS:
        _SETUPS.move_to_end(k)
        return _SETUPS[k]
    obj = build()
    _SETUPS[k] = obj
    while len(_SETUPS) > MAX_SETUPS:
        _SETUPS.popitem(last=False)
    return obj


def clear() -> None:
    _SETUPS.clear()
