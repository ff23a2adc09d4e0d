"""Damaged checkpoints: the newest intact step is restored with a warning, or one line when none is."""
import glob
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.train import parallel
from vqgan_jax.train.checkpoint import DAMAGED_DIR, CheckpointMismatch, Checkpointer, abstract_like


def _state(value):
    return {"step": jnp.asarray(value, jnp.int32), "w": jnp.full((64, 64), float(value), jnp.float32)}


@pytest.fixture
def three_steps(tmp_path):
    """checkpoints/ with steps 1, 2, 3 whose arrays hold the step number."""
    directory = str(tmp_path / "part" / "checkpoints")
    ck = Checkpointer(directory, keep=5, save_every=1, async_save=False)
    for s in (1, 2, 3):
        ck.save(s, _state(s))
    ck.close()
    return directory


def _target():
    return abstract_like(_state(0), parallel.replicated(parallel.make_mesh()))


def _truncate_arrays(step_dir):
    data = [f for f in glob.glob(os.path.join(step_dir, "**", "*"), recursive=True)
            if os.path.isfile(f) and "/d/" in f]
    assert data, os.listdir(step_dir)
    for f in data:
        with open(f, "r+b") as fh:
            fh.truncate(max(os.path.getsize(f) // 3, 1))


def _metadata(step_dir, content):
    path = os.path.join(step_dir, "default", "_METADATA")
    assert os.path.exists(path)
    with open(path, "w") as f:
        f.write(content)


DAMAGE = {
    "truncated_arrays": _truncate_arrays,
    "garbage_metadata": lambda d: _metadata(d, "\x00garbage{"),
    "empty_metadata": lambda d: _metadata(d, ""),
    "missing_default": lambda d: shutil.rmtree(os.path.join(d, "default")),
    "junk_step_folder": lambda d: (shutil.rmtree(d), os.makedirs(d),
                                   open(os.path.join(d, "junk.txt"), "w").write("junk")),
}


@pytest.mark.parametrize("how", sorted(DAMAGE))
def test_falls_back_to_the_newest_intact_step(three_steps, how, caplog):
    DAMAGE[how](os.path.join(three_steps, "3"))
    ck = Checkpointer(three_steps, keep=5, save_every=1, async_save=False)
    state, step = ck.restore_latest(_target())
    assert step == 2 and float(state["w"][0, 0]) == 2.0
    assert "step 3" in caplog.text and "damaged" in caplog.text
    assert os.path.isdir(os.path.join(three_steps, "3"))  # inference-style restore moves nothing
    ck.close()


def test_training_sets_damaged_steps_aside_and_saves_again(three_steps):
    _truncate_arrays(os.path.join(three_steps, "3"))
    ck = Checkpointer(three_steps, keep=5, save_every=1, async_save=False)
    _, step = ck.restore_latest(_target(), set_aside=True)
    assert step == 2
    moved = os.listdir(os.path.join(os.path.dirname(three_steps), DAMAGED_DIR))
    assert len(moved) == 1 and moved[0].startswith("3-")
    assert ck.all_steps() == [1, 2]
    assert ck.save(3, _state(30), force=True)  # the step can be written again
    ck.wait()
    state, step = ck.restore_latest(_target())
    assert step == 3 and float(state["w"][0, 0]) == 30.0
    ck.close()


def test_all_damaged_is_one_line(three_steps):
    for s in (1, 2, 3):
        _metadata(os.path.join(three_steps, str(s)), "")
    ck = Checkpointer(three_steps, keep=5, save_every=1, async_save=False)
    with pytest.raises(UserError, match=r"no intact checkpoint .*damaged steps: 3, 2, 1"):
        ck.restore_latest(_target())


def test_another_model_is_not_a_fallback(three_steps):
    ck = Checkpointer(three_steps, keep=5, save_every=1, async_save=False)
    other = abstract_like({"step": jnp.asarray(0, jnp.int32), "w": jnp.zeros((8, 8))},
                          parallel.replicated(parallel.make_mesh()))
    with pytest.raises(CheckpointMismatch, match="different model"):
        ck.restore_latest(other)


def test_no_checkpoint_is_none(tmp_path):
    assert Checkpointer(str(tmp_path / "ck"), async_save=False).restore_latest(_target()) is None


def test_restore_parts_falls_back_too(three_steps):
    _metadata(os.path.join(three_steps, "3"), "")
    ck = Checkpointer(three_steps, async_save=False)
    parts, step = ck.restore_latest({"w": _target()["w"]}, parts=True)
    assert step == 2 and np.all(np.asarray(jax.device_get(parts["w"])) == 2.0)
