"""Checkpoints through orbax's CheckpointManager: atomic, async, keep-last-N, strict restores.

Orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save keeps its previous checkpoint. Restores compare the saved tree (names, shapes, dtypes)
with the state the current config builds *before* reading any array: a checkpoint of another model
is a one-line `CheckpointMismatch`, never a partial load. A damaged step (truncated array files, junk
or empty metadata, a missing `default/` item) is skipped with a warning by `restore_latest`, which
falls back to the newest intact step; training moves the damaged ones aside to
`DIR/<part>/damaged_checkpoints/` (never deletes them) so new saves cannot collide with them.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from vqgan_jax.errors import UserError

log = logging.getLogger("vqgan_jax")
DAMAGED_DIR = "damaged_checkpoints"


class CheckpointMismatch(UserError):
    """The checkpoint was written by a different model (names or shapes differ): never a fallback."""


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _flat_shapes(tree: Any) -> dict[str, tuple]:
    """{'g_params/encoder/conv_in/kernel': (shape, dtype)} for every array-like leaf."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if leaf is None:
            continue
        shape = tuple(getattr(leaf, "shape", np.shape(leaf)))
        dtype = getattr(leaf, "dtype", None)
        out["/".join(_key_name(k) for k in path)] = (shape, str(np.dtype(dtype)) if dtype is not None else None)
    return out


def describe_mismatch(saved: dict, wanted: dict, limit: int = 3) -> str:
    """A short human description of how two flat shape tables differ ('' when they agree)."""
    problems = []
    for k in sorted(set(saved) | set(wanted)):
        if k not in saved:
            problems.append(f"{k} missing in the checkpoint")
        elif k not in wanted:
            problems.append(f"{k} in the checkpoint but not in this model")
        elif saved[k][0] != wanted[k][0]:
            problems.append(f"{k} has shape {saved[k][0]} in the checkpoint, {wanted[k][0]} here")
        if len(problems) >= limit:
            break
    return "; ".join(problems)


class Checkpointer:
    """Saves every `save_every` steps (and when forced), keeps the last `keep`, restores strictly.

    directory: absolute or relative path of the `checkpoints/` folder (created when missing).
    """

    def __init__(self, directory: str, *, keep: int = 3, save_every: int = 1000, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(int(save_every), 1), create=True,
            enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
        # Naming the handler lets a fresh manager read a saved tree's metadata (names, shapes, dtypes).
        self._mngr = ocp.CheckpointManager(self.directory, options=options,
                                           item_handlers=ocp.StandardCheckpointHandler())

    def latest_step(self) -> int | None:
        return self._mngr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mngr.all_steps())

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Starts saving `state` as `step` (async); returns whether a save was started."""
        if not force and not self._mngr.should_save(int(step)):
            return False
        return self._mngr.save(int(step), args=ocp.args.StandardSave(host_copy(state)), force=force)

    def restore(self, abstract_state: Any, step: int | None = None) -> Any:
        """Restores `step` (default: latest) into the structure/shardings of `abstract_state`
        (a pytree of jax.ShapeDtypeStruct with shardings). Raises UserError on any mismatch."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint found in {self.directory}")
        saved = _flat_shapes(self._mngr.item_metadata(step))
        if not saved:
            raise UserError(f"the checkpoint in {self.directory} (step {step}) is unreadable or empty: "
                            "delete that step folder to resume from an earlier one")
        wanted = _flat_shapes(abstract_state)
        mismatch = describe_mismatch(saved, wanted)
        if mismatch:
            raise CheckpointMismatch(
                f"the checkpoint in {self.directory} (step {step}) was written by a different model: {mismatch}; "
                "use a new --workdir or the config that made it")
        return self._mngr.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def restore_parts(self, abstract_parts: dict, step: int | None = None) -> dict:
        """Restores only some top-level entries of a saved state, e.g. {'ema_params': ..., 'vq_stats': ...}
        (pytrees of jax.ShapeDtypeStruct with shardings): what inference needs, without the optimizer
        moments or the discriminator. Step default: latest. Raises UserError on any mismatch."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise UserError(f"no checkpoint found in {self.directory}")
        meta = self._mngr.item_metadata(step)
        if not meta:
            raise UserError(f"the checkpoint in {self.directory} (step {step}) is unreadable or empty")
        saved = {k: v for k, v in _flat_shapes(meta).items() if k.split("/")[0] in abstract_parts}
        mismatch = describe_mismatch(saved, _flat_shapes(abstract_parts))
        if mismatch:
            raise CheckpointMismatch(
                f"the checkpoint in {self.directory} (step {step}) was written by a different model: {mismatch}; "
                "use a new --workdir or the config that made it")
        restore_args = jax.tree.map(lambda a: ocp.ArrayRestoreArgs(dtype=a.dtype, sharding=a.sharding),
                                    abstract_parts)
        path = os.path.join(self.directory, str(step), "default")
        return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(
            item=abstract_parts, restore_args=restore_args, partial_restore=True))

    def restore_latest(self, abstract: Any, *, parts: bool = False, set_aside: bool = False
                       ) -> tuple[Any, int] | None:
        """The newest intact step: (restored tree, step), or None when there is no checkpoint at all.

        abstract: the restore target of `restore` (parts=False) or `restore_parts` (parts=True). Damaged
        steps are skipped with a warning (set_aside=True, for training: moved to
        `../damaged_checkpoints/STEP-TIME`); a model mismatch is raised at once; UserError when every
        step is damaged.
        """
        damaged = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                tree = self.restore_parts(abstract, step) if parts else self.restore(abstract, step)
            except CheckpointMismatch:
                raise
            except Exception as e:  # noqa: BLE001 - orbax/tensorstore/json/OS errors all mean "damaged"
                reason = " ".join(str(e).split())[:160] or type(e).__name__
                log.warning("warning: checkpoint step %d in %s is damaged (%s); trying an older one",
                            step, self.directory, reason)
                damaged.append(step)
                continue
            if set_aside and damaged:
                self._set_aside(damaged)
            return tree, step
        if damaged:
            raise UserError(
                f"no intact checkpoint in {self.directory} (damaged steps: {', '.join(map(str, damaged))}): "
                "move that folder away to start fresh, or restore it from a backup")
        return None

    def _set_aside(self, steps: list[int]) -> None:
        """Moves damaged step folders out of the manager's folder (process 0; every process reloads)."""
        from vqgan_jax.train.parallel import barrier
        barrier("damaged checkpoints found")
        if jax.process_index() == 0:
            target = os.path.join(os.path.dirname(self.directory), DAMAGED_DIR)
            os.makedirs(target, exist_ok=True)
            for step in steps:
                dest = os.path.join(target, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
                os.rename(os.path.join(self.directory, str(step)), dest)
                log.warning("warning: moved the damaged checkpoint step %d to %s", step, dest)
        barrier("damaged checkpoints moved")
        self._mngr.reload()

    def wait(self) -> None:
        self._mngr.wait_until_finished()

    def close(self) -> None:
        self._mngr.wait_until_finished()
        self._mngr.close()

    # A manager left open when the process exits (an inference error, say) can have orbax's background
    # threads print "cannot schedule new futures after interpreter shutdown" tracebacks: readers use
    # `with Checkpointer(...) as ckpt:` so it is closed on every path.
    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False


def stored_latest_step(directory: str) -> int | None:
    """The newest step saved in the `checkpoints/` folder `directory`, or None when it holds none or does
    not exist (it is not created). Readers that only ask whether a part was trained use this."""
    if not os.path.isdir(directory):
        return None
    with Checkpointer(directory, async_save=False) as ckpt:
        return ckpt.latest_step()


def host_copy(state: Any) -> Any:
    """What `Checkpointer.save` hands orbax: numpy copies of `state` when one process holds all of it.

    Orbax's per-array work for jax.Arrays spread over several devices costs milliseconds per leaf: a
    tiny VQGAN state (658 leaves, replicated on 8 CPU devices) took 3-4.5 s per save as jax.Arrays and
    0.4 s as numpy, and the synchronous part of the save blocks the training loop. The files are the
    same (a restore gives jax.Arrays with the target's shardings either way). With several processes
    a replicated array is not addressable from one of them, so it stays a jax.Array and orbax
    coordinates the write.
    """
    if jax.process_count() > 1:
        return state
    return jax.device_get(state)


def abstract_like(tree: Any, sharding) -> Any:
    """ShapeDtypeStructs of `tree` with `sharding` on every leaf (the restore target)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), tree)
