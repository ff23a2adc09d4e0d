"""The VQGAN trainer on the tiny preset: resume equals a straight run, the NaN stop."""
import os

import jax
import numpy as np
import pytest

from configs import demo
from vqgan_jax.errors import UserError
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train import runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.vqgan import VQGANSetup, train as train_vqgan


def tiny(num_steps=4, **overrides):
    c = demo.get_config("tiny")
    c.train.num_steps = num_steps
    for k, v in overrides.items():
        sec, key = k.split(".")
        c[sec][key] = v
    return c


def final_params(work):
    cfg = runs.read_config(work, "vqgan")
    setup = VQGANSetup(cfg)
    ck = Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False)
    return jax.device_get(ck.restore(setup.abstract_state()))


@pytest.mark.slow
def test_resume_equals_straight_run(tmp_path):
    """4 steps straight == 2 steps + restart + 2 steps: same data order, rng, EMA and optimizer state."""
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    config = tiny(4)
    train_vqgan(config, a)
    train_vqgan(tiny(2), b)
    train_vqgan(tiny(4), b)        # continue the same run to 4
    # The three runs shared one setup (their configs differ in `train` only): one compiled step.
    assert VQGANSetup.shared(config).compile_count() == 1
    sa, sb = final_params(a), final_params(b)
    assert int(sa.step) == int(sb.step) == 4
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
        np.testing.assert_allclose(x, y, atol=1e-6, rtol=0)
    rows = lambda w: [r for r in metrics_lib.read_metrics(os.path.join(w, "vqgan", "metrics.jsonl"))  # noqa: E731
                      if "g/rec" in r]
    ra, rb = rows(a), rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [2, 4]
    for x, y in zip(ra, rb):
        for k in ("g/rec", "g/commit", "g/adv", "d/loss", "d_weight", "codebook/usage"):
            np.testing.assert_allclose(x[k], y[k], atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    work = str(tmp_path / "w")
    train_vqgan(tiny(2), work)
    with pytest.raises(metrics_lib.NonFiniteLoss, match="step 4"):
        train_vqgan(tiny(6, **{"loss.rec_weight": float("nan")}), work)
    assert Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False).latest_step() == 2
    assert isinstance(metrics_lib.NonFiniteLoss("x"), UserError)
