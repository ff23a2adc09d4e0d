"""Two processes x 4 CPU devices, for real (jax.distributed on localhost, CPU collectives over gloo):
the same losses as 1 process x 8 devices, checkpoints that move between the two, disjoint data shards,
and a killed peer that ends the other process with a clear message instead of a hang."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.cli.commands import ROOT
from vqgan_jax.train import metrics as metrics_lib

# One worker (the processes need the CPU together); the slow tier (`make test-slow`, run by CI).
pytestmark = [pytest.mark.xdist_group("multihost"), pytest.mark.slow]

BASE = ["--config", "configs/demo.py:tiny", "--config.ops=plain", "--config.train.log_every=1",
        "--config.train.image_every=0", "--config.train.eval_every=0", "--config.prior.log_every=1"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def _launch(work, *args, processes=2, port=None):
    """Starts the job; returns the Popen objects (process 0 first)."""
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *BASE, "--workdir", work, *args]
    if processes == 1:
        return [subprocess.Popen(cmd, cwd=ROOT, env=_env(8), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)]
    port = port or _port()
    return [subprocess.Popen(cmd + ["--coordinator_address", f"localhost:{port}", "--num_processes", "2",
                                    "--process_id", str(i)], cwd=ROOT, env=_env(4), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(2)]


def _job(work, *args, processes=2, timeout=900, stderr=False):
    """Runs the job to the end (every process exits 0); returns process 0's stdout (and stderr)."""
    procs = _launch(work, *args, processes=processes)
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, (p.returncode, out[-1500:], err[-3000:])
    return outs[0] if stderr else outs[0][0]


def _rows(work, part):
    return {r["step"]: r for r in metrics_lib.read_metrics(os.path.join(work, part, "metrics.jsonl"))}


def _assert_same_rows(a, b, keys, steps):
    for s in steps:
        for k in keys:
            np.testing.assert_allclose(a[s][k], b[s][k], rtol=1e-4, atol=1e-5, err_msg=f"{k} at step {s}")


@pytest.fixture(scope="module")
def runs_(tmp_path_factory):
    base = tmp_path_factory.mktemp("mh")
    one, two = str(base / "one"), str(base / "two")
    _job(one, "--config.train.num_steps=4", processes=1)
    _job(two, "--config.train.num_steps=4", processes=2)
    return one, two


STAGE1_KEYS = ("g/rec", "g/commit", "g/adv", "d/loss", "codebook/usage")


def test_two_processes_train_stage1_like_one(runs_):
    one, two = runs_
    a, b = _rows(one, "vqgan"), _rows(two, "vqgan")
    _assert_same_rows(a, b, STAGE1_KEYS, [1, 2, 3, 4])
    assert json.load(open(os.path.join(two, "vqgan", "config.json")))["train"]["num_steps"] == 4


def test_two_processes_train_the_prior_like_one(runs_):
    one, two = runs_
    for work, n in ((one, 1), (two, 2)):
        _job(work, "--stage", "prior", "--config.prior.num_steps=2", processes=n)
    _assert_same_rows(_rows(one, "prior"), _rows(two, "prior"), ("loss", "accuracy"), [1, 2])


def test_checkpoints_move_between_one_and_two_processes(runs_):
    one, two = runs_
    out1 = _job(two, "--config.train.num_steps=6", processes=1)   # written by 2 processes, resumed by 1
    out2 = _job(one, "--config.train.num_steps=6", processes=2)   # and the reverse
    assert "resuming stage 1 from step 4" in out1 and "resuming stage 1 from step 4" in out2
    _assert_same_rows(_rows(one, "vqgan"), _rows(two, "vqgan"), STAGE1_KEYS, [5, 6])


def _latest_step(work, part="vqgan") -> int:
    return max(int(d) for d in os.listdir(os.path.join(work, part, "checkpoints")) if d.isdigit())


def test_a_killed_peer_ends_the_job_with_a_message_and_it_resumes(runs_):
    _, two = runs_
    start = _latest_step(two)  # 4 or 6: this test does not depend on which tests ran before it
    procs = _launch(two, "--config.train.num_steps=100000", "--config.train.ckpt_every=100000")
    deadline = time.time() + 600
    for line in procs[0].stdout:  # until training is under way in this job
        if line.startswith(f"step {start + 2}/"):
            break
        assert time.time() < deadline, "the job did not start"
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.time()
    out, err = procs[0].communicate(timeout=120)                  # no hang
    procs[1].wait()
    assert procs[0].returncode == 3, (out[-1000:], err[-3000:])
    assert "another process" in err and "error:" in err
    assert time.time() - t0 < 90
    assert _latest_step(two) == start  # nothing was saved after the peer died
    # The whole job again: it resumes from the last checkpoint and trains one more step.
    last, last_err = _job(two, f"--config.train.num_steps={start + 1}", processes=2, stderr=True)
    resumed = [line for line in last.splitlines() if "resuming" in line or "already trained" in line]
    assert resumed and f"resuming stage 1 from step {start} " in resumed[0], (resumed, last[:1500], last_err[-3000:])
    assert f"step {start + 1}/{start + 1}" in last and _latest_step(two) == start + 1


@pytest.mark.parametrize("source", ["synthetic", "folder"])
def test_process_shards_cover_each_training_image_once_per_epoch(tmp_path, source):
    from PIL import Image
    from configs.base import get_base_config
    from vqgan_jax.data import pipeline
    cfg = get_base_config().data
    cfg.image_size, cfg.random_flip = 8, False
    if source == "synthetic":
        cfg.synthetic_size = 64
    else:
        cfg.source, cfg.dir, cfg.eval_fraction = "folder", str(tmp_path), 0.0
        for i in range(40):
            Image.fromarray(np.full((8, 8, 3), i * 6, np.uint8)).save(tmp_path / f"{i:02d}.png")
    n = pipeline.dataset_info(cfg)["num_train"]
    seen = []
    for pi in range(2):
        ds = pipeline.make_dataset(cfg, split="train", global_batch_size=8, seed=3, training=True,
                                   process_index=pi, process_count=2)
        batches = pipeline.iterate_numpy(ds)
        per_epoch = (n // 2) // 4                                # this process's batches in one epoch
        seen.append(np.concatenate([next(batches)["image"] for _ in range(per_epoch)]))
    keys = [tuple(np.round(img, 3).ravel()[:48]) for part in seen for img in part]
    assert len(keys) == (n // 2 // 4) * 4 * 2 and len(set(keys)) == len(keys)  # disjoint, no repeats
    assert len(keys) >= n - 8                                    # every image but the dropped remainder
