"""train.py --stage diffusion and sample.py --prior diffusion end to end: images, and one-line errors for
bad input (no stage 1, steps < 1, a label outside the classes)."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_sample_py_diffusion_end_to_end(diffusion_run_dir, tmp_path):
    out = tmp_path / "samples"
    r = run("sample.py", "--workdir", diffusion_run_dir, "--prior", "diffusion", "--num", "3", "--batch_size", "2",
            "--out", str(out), "--seed", "0", "--sampler", "ddim", "--steps", "2", "--eta", "0.5", "--label", "1",
            "--cfg_scale", "2.0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["grid.png"] + [f"sample_{i:05d}.png" for i in range(3)]
    for bad, message in ((["--steps", "0"], "error: steps must be between 1 and the 1000 training timesteps"),
                         (["--label", "6"], "error: --label must be in 0..5, got 6")):
        r = run("sample.py", "--workdir", diffusion_run_dir, "--prior", "diffusion", "--out", str(tmp_path / "x"),
                *bad)
        assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]
        assert "Traceback" not in r.stderr


def test_train_py_diffusion_without_stage1(tmp_path):
    r = run("train.py", "--config", "configs/demo.py:tiny", "--workdir", str(tmp_path / "empty"), "--stage",
            "diffusion")
    assert r.returncode == 2 and "error: no vqgan checkpoint" in r.stderr and "Traceback" not in r.stderr
