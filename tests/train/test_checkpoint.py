"""Checkpointer: saves from host copies, restores onto the target's shardings, gates by save_every."""
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vqgan_jax.train import parallel
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like, host_copy, stored_latest_step
from vqgan_jax.errors import UserError


def _state(mesh, scale=1.0):
    tree = {"step": jnp.asarray(7, jnp.int32),
            "params": {"w": jnp.arange(12, dtype=jnp.float32).reshape(3, 4) * scale,
                       "b": jnp.full((5,), -2.5 * scale, jnp.bfloat16)}}
    return jax.device_put(tree, parallel.replicated(mesh))


def test_host_copy_is_numpy_in_one_process():
    mesh = parallel.make_mesh()
    leaves = jax.tree.leaves(host_copy(_state(mesh)))
    assert all(isinstance(x, np.ndarray) for x in leaves)


def test_round_trip_onto_the_target_sharding(tmp_path):
    mesh = parallel.make_mesh()  # all devices (conftest's 8 simulated CPUs): the state is replicated
    state = _state(mesh)
    ck = Checkpointer(str(tmp_path / "ck"), save_every=2, async_save=False)
    assert ck.save(2, state)
    target = abstract_like(state, parallel.replicated(mesh))
    restored = ck.restore(target)
    for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(state)):
        assert isinstance(got, jax.Array) and got.sharding == want.sharding
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
    ck.close()


def test_stored_latest_step_reads_without_creating(tmp_path):
    missing = str(tmp_path / "none" / "checkpoints")
    assert stored_latest_step(missing) is None and not (tmp_path / "none").exists()
    with Checkpointer(str(tmp_path / "ck"), async_save=False) as ck:
        assert stored_latest_step(ck.directory) is None       # exists, empty
        ck.save(3, _state(parallel.make_mesh()), force=True)
        ck.save(5, _state(parallel.make_mesh()), force=True)
    assert stored_latest_step(str(tmp_path / "ck")) == 5


def test_save_every_gates_saves_and_force_overrides(tmp_path):
    mesh = parallel.make_mesh()
    ck = Checkpointer(str(tmp_path / "ck"), save_every=2, async_save=False)
    assert ck.save(2, _state(mesh))
    assert not ck.save(3, _state(mesh, 2.0))       # not due: nothing written
    assert ck.all_steps() == [2]
    assert ck.save(3, _state(mesh, 3.0), force=True)
    assert sorted(ck.all_steps()) == [2, 3]
    restored = ck.restore(abstract_like(_state(mesh), parallel.replicated(mesh)), 3)
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.arange(12).reshape(3, 4) * 3.0)
    ck.close()


def test_checkpoints_written_from_device_arrays_still_restore(tmp_path):
    """Checkpoints saved before `host_copy` (jax.Arrays handed to orbax) read back the same."""
    mesh = parallel.make_mesh()
    state = _state(mesh)
    mngr = ocp.CheckpointManager(str(tmp_path / "ck"), item_handlers=ocp.StandardCheckpointHandler(),
                                 options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False))
    mngr.save(5, args=ocp.args.StandardSave(state))
    mngr.close()
    ck = Checkpointer(str(tmp_path / "ck"), async_save=False)
    restored = ck.restore(abstract_like(state, parallel.replicated(mesh)))
    np.testing.assert_array_equal(np.asarray(restored["params"]["w"]), np.asarray(state["params"]["w"]))
    with pytest.raises(UserError, match="different model"):
        other = {"step": state["step"], "params": {"w": jnp.zeros((4, 4)), "b": state["params"]["b"]}}
        ck.restore(abstract_like(other, parallel.replicated(mesh)))
    ck.close()
