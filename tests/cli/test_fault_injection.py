"""kill -9 at random moments (a checkpoint every step, so many kills land inside a checkpoint write):
every rerun resumes from the last complete checkpoint and the run ends bit-identical to a straight one."""
import os
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from tests.cli.commands import ROOT, run
from vqgan_jax.train import runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.vqgan import VQGANSetup

pytestmark = pytest.mark.slow  # eight restarts of train.py: the slow tier (`make test-slow`, run by CI)

STEPS = 8
ARGS = ["--config", "configs/demo.py:tiny", f"--config.train.num_steps={STEPS}", "--config.train.ckpt_every=1",
        "--config.train.log_every=1", "--config.train.image_every=0", "--config.train.eval_every=0"]


def _state(work):
    setup = VQGANSetup(runs.read_config(work, "vqgan"))
    return jax.device_get(Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False)
                          .restore(setup.abstract_state()))


def _complete_steps(work):
    return Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False).all_steps()


def test_random_kills_resume_bit_identically(tmp_path):
    straight, faulty = str(tmp_path / "straight"), str(tmp_path / "faulty")
    r = run("train.py", *ARGS, "--workdir", straight)
    assert r.returncode == 0, r.stderr[-2000:]
    rng = random.Random(0)
    kills, resumed_from = 0, []
    while kills < 3:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *ARGS, "--workdir", faulty],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = rng.randint(1, STEPS - 1)
        for line in p.stdout:
            if line.startswith("resuming stage 1 from step "):
                resumed_from.append(int(line.split()[5]))
            if line.startswith("step ") and int(line.split()[1].split("/")[0]) >= target:
                time.sleep(rng.uniform(0.0, 0.15))  # somewhere in the checkpoint write that follows
                break
        p.send_signal(signal.SIGKILL)
        p.wait()
        kills += 1
        before = _complete_steps(faulty)
        r = run("train.py", *ARGS[:2], "--config.train.num_steps=0", "--workdir", faulty)  # a no-op rerun
        if before:
            # Nothing before the last complete checkpoint is lost: the rerun starts from it.
            assert f"resuming stage 1 from step {max(before)}" in r.stdout, (before, r.stdout, r.stderr[-2000:])
    r = run("train.py", *ARGS, "--workdir", faulty)
    assert r.returncode == 0, r.stderr[-2000:]
    a, b = _state(straight), _state(faulty)
    assert int(a.step) == int(b.step) == STEPS
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
