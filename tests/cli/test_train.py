"""train.py end to end on the tiny preset: the run-folder contract, rerun and continue, signals, bad input."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train.checkpoint import Checkpointer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REQUIRED_KEYS = {"step", "g/rec", "g/commit", "g/adv", "d/loss", "d_weight", "codebook/usage",
                 "codebook/perplexity", "images_per_sec"}


def cli(*args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("run"))
    r = cli("--config", "configs/demo.py:tiny", "--workdir", work, "--config.train.num_steps=4")
    assert r.returncode == 0, r.stderr[-3000:]
    return work, r


def test_cli_writes_the_run_folder_contract(cli_run):
    work, r = cli_run
    out = os.path.join(work, "vqgan")
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["train"]["num_steps"] == 4 and cfg["data"]["source"] == "synthetic"
    assert Checkpointer(os.path.join(out, "checkpoints"), async_save=False).all_steps() == [2, 4]
    rows = metrics_lib.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [row["step"] for row in rows if "g/rec" in row] == [2, 4]
    assert REQUIRED_KEYS <= set(rows[-1]) or REQUIRED_KEYS <= set().union(*rows)
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(out, "images", "*.png"))) == [
        "step_0000002.png", "step_0000004.png"]
    assert glob.glob(os.path.join(out, "tb", "events.out.tfevents.*"))
    assert "step 4/4" in r.stdout


@pytest.mark.slow
def test_cli_rerun_is_a_no_op_and_more_steps_continue(cli_run):
    work, _ = cli_run
    r = cli("--config", "configs/demo.py:tiny", "--workdir", work, "--config.train.num_steps=4")
    assert r.returncode == 0 and "nothing to do" in r.stdout
    r = cli("--config", "configs/demo.py:tiny", "--workdir", work, "--config.train.num_steps=6")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming stage 1 from step 4" in r.stdout
    assert Checkpointer(os.path.join(work, "vqgan", "checkpoints"), async_save=False).latest_step() == 6


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.slow
def test_cli_mismatched_checkpoint_is_a_clear_error(cli_run):
    work, _ = cli_run
    r = cli("--config", "configs/demo.py:tiny", "--workdir", work, "--config.model.ch=16")
    one_line_error(r, "model.ch", "--workdir")


def test_cli_missing_data_dir(tmp_path):
    r = cli("--config", "configs/demo.py:tiny", "--workdir", str(tmp_path / "w"), "--config.data.source=folder",
            f"--config.data.dir={tmp_path / 'nope'}")
    one_line_error(r, "nope")


def test_cli_config_typo_fails(tmp_path):
    r = cli("--config", "configs/demo.py:tiny", "--workdir", str(tmp_path / "w"), "--config.train.num_stepz=3")
    assert r.returncode != 0
    assert "num_stepz" in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "w")


@pytest.mark.slow
def test_cli_sigterm_saves_and_resumes(tmp_path):
    work = str(tmp_path / "w")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    args = [sys.executable, os.path.join(ROOT, "train.py"), "--config", "configs/demo.py:tiny", "--workdir", work,
            "--config.train.num_steps=100000", "--config.train.log_every=1", "--config.train.ckpt_every=100000",
            "--config.train.image_every=0", "--config.train.eval_every=0"]
    p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    for line in p.stdout:  # wait until training is under way
        if line.startswith("step 3/"):
            break
        assert time.time() < deadline
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err[-2000:]  # 128 + SIGTERM: `train.py && ...` stops after a preemption
    assert "SIGTERM received: checkpoint saved at step" in out
    saved = int(out.split("checkpoint saved at step ")[1].split(";")[0])
    assert Checkpointer(os.path.join(work, "vqgan", "checkpoints"), async_save=False).latest_step() == saved
