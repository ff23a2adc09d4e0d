"""sample.py end to end on the shared tiny run folder: samples, the codebook, bad input."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sample_cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "sample.py"), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_sample_py_end_to_end(run_dir, tmp_path):
    out = tmp_path / "samples"
    r = sample_cli("--workdir", run_dir, "--num", "5", "--batch_size", "4", "--out", str(out), "--seed", "0",
                   "--top_k", "8", "--top_p", "0.95", "--label", "1", "--cfg_scale", "2.0")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["grid.png"] + [f"sample_{i:05d}.png" for i in range(5)]
    r = sample_cli("--workdir", run_dir, "--codebook", "--out", str(tmp_path / "codebook.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.getsize(tmp_path / "codebook.png") > 1000
    r = sample_cli("--workdir", run_dir, "--label", "6", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "error: --label 6 is outside the prior's classes 0..5" in r.stderr
    assert "Traceback" not in r.stderr


def test_sampling_without_a_prior_is_a_clear_error(tmp_path):
    r = sample_cli("--workdir", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "error: no prior in" in r.stderr and "Traceback" not in r.stderr
