"""`python -m vqgan_jax.evaluate` end to end on the shared tiny run folder."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vqgan_jax.interop import inception_weights as inception

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECON_KEYS = {"num_images", "psnr", "ssim", "l1", "lpips", "codebook_usage", "perplexity", "dead_codes"}
GEN_KEYS = {"num_samples", "fid", "kid_mean", "kid_std", "inception_score_mean", "inception_score_std"}
CLF_KEYS = {"accuracy", "classes", "confusion", "num_train", "num_test"}


def run_evaluate(*args, timeout=600):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "vqgan_jax.evaluate", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    return inception.make_random_weights(str(tmp_path_factory.mktemp("incep") / "random.npz"), seed=0)


@pytest.mark.slow
def test_evaluate_run_folder_end_to_end(run_dir, inception_weights, tmp_path):
    out = tmp_path / "ev" / "eval.json"
    r = run_evaluate("--workdir", run_dir, "--num_samples", "8", "--max_images", "16", "--classifier_epochs", "1",
                     "--inception_weights", inception_weights, "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.load(open(out))
    rec, gen, clf = result["reconstruction"], result["generation"], result["classifier"]
    assert RECON_KEYS <= set(rec) and GEN_KEYS <= set(gen) and CLF_KEYS <= set(clf)
    assert rec["num_images"] == 16 and gen["num_samples"] == 8 and gen["num_fake"] == 8
    assert all(np.isfinite(rec[k]) for k in RECON_KEYS)
    assert all(np.isfinite(gen[k]) for k in GEN_KEYS)
    assert 0 < rec["codebook_usage"] <= 1 and rec["dead_codes"] == round((1 - rec["codebook_usage"]) * 32)
    assert 1 <= rec["perplexity"] <= 32 and -1 <= rec["ssim"] <= 1 and gen["fid"] >= 0
    assert 1 <= gen["inception_score_mean"] <= 1008
    assert sum(map(sum, clf["confusion"])) == clf["num_test"]
    for name in ("reconstructions", "codebook", "samples", "classifier_confusion", "vqgan/evolution",
                 "vqgan/loss_curves", "prior/loss_curves"):
        assert os.path.isfile(result["pictures"][name]), name
    assert os.path.isfile(tmp_path / "ev" / "classifier_report.txt")
    assert os.path.isfile(tmp_path / "ev" / "inception_real.npz")  # real statistics cached per run
    assert "psnr" in r.stdout and "accuracy" in r.stdout  # the printed table


def test_bad_input_gets_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_evaluate("--workdir", str(empty), timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = run_evaluate("--real", str(empty), timeout=120)
    assert r.returncode == 2 and "--real and --fake go together" in r.stderr
