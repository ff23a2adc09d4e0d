"""`python -m vqgan_jax.evaluate` end to end on a tiny run folder, folder comparison, and its errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vqgan_jax import evaluation, images as images_lib, inception
from vqgan_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def test_reconstruction_metrics_match_hand_values():
    x = np.zeros((2, 16, 16, 3), np.float32)
    y = x + 0.1  # MSE on [0, 255]: (0.1 * 127.5)^2 -> PSNR 20 log10(255 / 12.75)
    ids = np.array([[[0, 1], [1, 1]], [[3, 3], [3, 3]]])
    m = evaluation.reconstruction_metrics(x, y, ids, num_codes=4, with_lpips=False)
    assert m["psnr"] == pytest.approx(20 * np.log10(255 / 12.75))
    assert m["l1"] == pytest.approx(0.1)
    assert m["codebook_usage"] == 0.75 and m["dead_codes"] == 1
    p = np.array([1, 3, 4]) / 8
    assert m["perplexity"] == pytest.approx(np.exp(-(p * np.log(p)).sum()))


def _write_folder(path, images_u8):
    os.makedirs(path, exist_ok=True)
    for i, im in enumerate(images_u8):
        images_lib.save_png(os.path.join(path, f"{i:03d}.png"), im)
    return str(path)


def test_compare_folders_tells_noise_from_flat_colours(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    flat = np.broadcast_to(rng.integers(0, 256, (200, 1, 1, 3), dtype=np.uint8), (200, 32, 32, 3))
    result = evaluation.compare_folders(_write_folder(tmp_path / "a", noise), _write_folder(tmp_path / "b", flat),
                                        fid=False, classifier_epochs=10, out_dir=str(tmp_path / "out"))
    assert result["image_size"] == 32 and result["generation"] is None
    assert result["classifier"]["accuracy"] >= 0.9
    assert os.path.isfile(tmp_path / "out" / "classifier_confusion.png")


def test_errors(tmp_path, run_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no checkpoint|train stage 1 first"):
        evaluation.evaluate_run(str(empty))
    with pytest.raises(UserError, match="no images"):
        evaluation.compare_folders(str(empty), str(empty), image_size=32, fid=False)
    with pytest.raises(UserError, match="no such folder"):
        evaluation.compare_folders(str(tmp_path / "nope"), str(empty), fid=False)
    with pytest.raises(UserError, match="Inception weights.*inception download"):
        evaluation.evaluate_run(run_dir, inception_weights=str(tmp_path / "missing.npz"), fid=True)
    # The command line: one `error:` line, exit status 2, no traceback.
    r = run_evaluate("--workdir", str(empty), timeout=120)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    r = run_evaluate("--real", str(empty), timeout=120)
    assert r.returncode == 2 and "--real and --fake go together" in r.stderr
