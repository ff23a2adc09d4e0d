"""A tiny VAE run end to end through the entry points: train.py (stage from model.name), sample.py (samples,
interpolation, latent map, bad input) and `python -m vqgan_jax.evaluate` (the shared generation block plus
the VAE's reconstruction block)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

# The slow tier (`make test-slow`, run by CI): these runs repeat, through the entry points, paths the fast tier
# covers in-process (tests/trainers/test_vae.py trains and writes the part; tests/sampling/test_vae.py samples,
# interpolates and draws the latent strip).
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(*args, timeout=900):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("vae_run"))
    r = cli("train.py", "--config", "configs/vae/flowers64.py:tiny", "--workdir", work)
    assert r.returncode == 0, r.stderr[-3000:]
    return work


def test_train_writes_the_vae_part(vae_run):
    part = os.path.join(vae_run, "vae")
    assert {"config.json", "checkpoints", "metrics.jsonl", "images", "tb"} <= set(os.listdir(part))
    assert json.load(open(os.path.join(part, "config.json")))["model"]["name"] == "vae"


def test_sample_interpolate_and_latent_map(vae_run, tmp_path):
    from vqgan_jax.viz import images as images_lib
    out = tmp_path / "samples"
    r = cli("sample.py", "--workdir", vae_run, "--num", "5", "--batch_size", "4", "--out", str(out), "--seed", "0",
            "--temperature", "0.8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(os.listdir(out)) == ["grid.png"] + [f"sample_{i:05d}.png" for i in range(5)]
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        images_lib.save_png(str(tmp_path / name), rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    r = cli("sample.py", "--workdir", vae_run, "--interpolate", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
            "--steps", "4", "--slerp", "--out", str(tmp_path / "strip.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    from PIL import Image
    assert Image.open(tmp_path / "strip.png").size == (2 + 6 * 18, 2 + 18)
    r = cli("sample.py", "--workdir", vae_run, "--interpolate_classes", "0,1", "--steps", "3",
            "--out", str(tmp_path / "classes.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert Image.open(tmp_path / "classes.png").size == (2 + 3 * 18, 2 + 18)
    r = cli("sample.py", "--workdir", vae_run, "--latent_map", "--out", str(tmp_path / "map.png"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert os.path.getsize(tmp_path / "map.png") > 1000


def test_bad_input_gets_one_line(vae_run, tmp_path):
    r = cli("sample.py", "--workdir", vae_run, "--top_k", "5", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "error: the vae generator does not take --top_k" in r.stderr
    r = cli("sample.py", "--workdir", vae_run, "--label", "1", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "needs a class-conditional VAE" in r.stderr and "Traceback" not in r.stderr
    r = cli("sample.py", "--workdir", vae_run, "--interpolate", "nope.jpg", "--out", str(tmp_path / "x.png"))
    assert r.returncode == 2 and "two image files" in r.stderr
    r = cli("train.py", "--config", "configs/vae/flowers64.py:tiny", "--workdir", vae_run,
            "--config.model.likelihood=poisson")
    assert r.returncode == 2 and "error:" in r.stderr and "Traceback" not in r.stderr


def test_evaluate_a_vae_run(vae_run, tmp_path):
    out = tmp_path / "ev" / "eval.json"
    r = cli("-m", "vqgan_jax.evaluate", "--workdir", vae_run, "--num_samples", "8", "--max_images", "8",
            "--classifier_epochs", "1", "--fid=false", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.load(open(out))
    assert result["generator"] == "vae" and result["vae_step"] == 4
    rec, gen = result["reconstruction"], result["generation"]
    for k in ("psnr", "ssim", "l1", "lpips", "neg_elbo_nats_per_dim", "bits_per_dim", "kl", "active_units"):
        assert np.isfinite(rec[k]), k
    assert rec["latent_dims"] == 16 and 0 <= rec["active_units"] <= 16
    np.testing.assert_allclose(rec["bits_per_dim"], (rec["neg_elbo_nats_per_dim"] + np.log(127.5)) / np.log(2))
    for k in ("classifier_accuracy", "fd_vgg16", "kd_vgg16_mean", "kd_vgg16_std", "precision", "recall"):
        assert np.isfinite(gen[k]), k
    assert 0 <= gen["precision"] <= 1 and gen["num_samples"] == 8 and gen["fid"] is None
    for name in ("reconstructions", "latent_map", "samples", "classifier_confusion", "vae/evolution",
                 "vae/loss_curves"):
        assert os.path.isfile(result["pictures"][name]), name
    assert "fd_vgg16" in r.stdout and "bits_per_dim" in r.stdout
