"""Trainers under faults: no non-finite checkpoint, refused settings, resume bookkeeping, the prior
trained longer, fixed held-out batches. In process on the tiny preset (the CLI side: tests/cli)."""
import os

import jax
import numpy as np
import pytest

from configs import demo
from vqgan_jax.errors import UserError
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train import runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers import ar_prior
from vqgan_jax.trainers.vqgan import VQGANSetup, train as train_vqgan

pytestmark = pytest.mark.slow  # restarted and faulted runs: the slow tier (`make test-slow`, run by CI)


def tiny(num_steps=4, **overrides):
    c = demo.get_config("tiny")
    c.train.num_steps = num_steps
    for k, v in overrides.items():
        node = c
        *secs, key = k.split(".")
        for sec in secs:
            node = node[sec]
        node[key] = v
    return c


def _ckpt(work, part="vqgan"):
    return Checkpointer(runs.checkpoint_dir(work, part), async_save=False)


def _rows(work, part="vqgan"):
    return metrics_lib.read_metrics(os.path.join(work, part, "metrics.jsonl"))


def test_nan_state_is_never_checkpointed_and_the_last_finite_one_is_named(tmp_path):
    work = str(tmp_path / "w")
    fast = {"train.ckpt_every": 1, "train.log_every": 1, "train.image_every": 0, "train.eval_every": 0}
    train_vqgan(tiny(2, **fast), work)
    with pytest.raises(metrics_lib.NonFiniteLoss, match=r"non-finite parameter.*last finite checkpoint is step 2"):
        train_vqgan(tiny(4, **fast, **{"optim.g_lr": 1e39}), work)
    ck = _ckpt(work)
    assert ck.latest_step() == 2
    cfg = runs.read_config(work, "vqgan")
    state = jax.device_get(ck.restore(VQGANSetup(cfg).abstract_state()))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state) if np.issubdtype(np.asarray(x).dtype, np.floating))
    train_vqgan(tiny(3, **fast), work)  # a sane learning rate resumes from the finite checkpoint
    assert _ckpt(work).latest_step() == 3


def test_nan_on_the_first_step_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(metrics_lib.NonFiniteLoss, match="no checkpoint was saved before it"):
        train_vqgan(tiny(2, **{"optim.g_lr": 1e39, "train.log_every": 1, "train.ckpt_every": 1}), str(tmp_path))


@pytest.mark.parametrize("key,value,needle", [
    ("train.keep_checkpoints", 0, "train.keep_checkpoints=0 must be >= 1"),
    ("train.ckpt_every", 0, "train.ckpt_every=0 must be >= 1"),
    ("train.num_steps", -1, "train.num_steps=-1 must be >= 0"),
    ("train.log_every", 0, "train.log_every=0"),
    ("prior.keep_checkpoints", 0, "prior.keep_checkpoints=0"),
])
def test_settings_that_would_lose_the_model_are_refused(tmp_path, key, value, needle):
    c = tiny(2, **{key: value})
    with pytest.raises(UserError, match=needle.replace(".", r"\.")):
        (ar_prior.train if key.startswith("prior") else train_vqgan)(c, str(tmp_path / "w"))
    assert not os.path.exists(tmp_path / "w" / "vqgan" / "checkpoints")


def test_resume_drops_rows_it_trains_again_and_heldout_metrics_match(tmp_path):
    """2 + kill-after-step-3 + resume == straight 4: metrics rows once each, same held-out numbers."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    every = {"train.log_every": 1, "train.ckpt_every": 2, "train.eval_every": 1, "train.image_every": 0}
    train_vqgan(tiny(4, **every), a)
    train_vqgan(tiny(3, **every), b)       # checkpoints 2 and 3 (the last step is always saved)
    # Simulate a kill after step 3's rows were written but before its checkpoint: drop checkpoint 3.
    _ckpt(b)._mngr.delete(3)
    train_vqgan(tiny(4, **every), b)
    ra, rb = _rows(a), _rows(b)
    assert [r["step"] for r in rb] == [r["step"] for r in ra]          # no duplicated steps 3
    for x, y in zip(ra, rb):
        for k in ("g/rec", "eval/psnr", "eval/rec"):
            if k in x:
                np.testing.assert_allclose(x[k], y[k], atol=1e-5, err_msg=f"{k} at step {x['step']}")


def test_deleted_checkpoints_start_fresh_and_keep_old_metrics(tmp_path, capsys):
    work = str(tmp_path / "w")
    train_vqgan(tiny(2), work)
    import shutil
    shutil.rmtree(runs.checkpoint_dir(work, "vqgan"))
    train_vqgan(tiny(2), work)
    assert "starting fresh" in capsys.readouterr().out
    old = metrics_lib.read_metrics(os.path.join(work, "vqgan", "metrics.jsonl.old"))
    assert [r["step"] for r in _rows(work)] == [r["step"] for r in old] == [2, 2]  # train + eval rows, once


def test_the_prior_can_be_trained_longer_and_with_other_settings(run_dir, tmp_path):
    work = str(tmp_path / "w")
    shutil_copy = __import__("shutil").copytree
    shutil_copy(run_dir, work)
    c = demo.get_config("tiny")
    c.prior.num_steps, c.prior.log_every, c.prior.temperature = 6, 3, 0.7
    ar_prior.train(c, work)
    assert _ckpt(work, "prior").latest_step() == 6
    c.prior.n_embd = 64
    with pytest.raises(UserError, match=r"prior\.n_embd"):
        ar_prior.train(c, work)
