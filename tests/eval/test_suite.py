"""The evaluation suite: reconstruction metrics by hand, folder comparison, and its errors."""
import os

import numpy as np
import pytest

from vqgan_jax.eval import suite as evaluation
from vqgan_jax.viz import images as images_lib
from vqgan_jax.errors import UserError



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


@pytest.mark.slow
def test_compare_folders_tells_noise_from_flat_colours(tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    flat = np.broadcast_to(rng.integers(0, 256, (200, 1, 1, 3), dtype=np.uint8), (200, 32, 32, 3))
    result = evaluation.compare_folders(_write_folder(tmp_path / "a", noise), _write_folder(tmp_path / "b", flat),
                                        fid=False, classifier_epochs=10, out_dir=str(tmp_path / "out"), vgg_size=32)
    assert result["image_size"] == 32
    gen = result["generation"]  # the same block as a run's samples get: VGG16 features, no Inception
    assert gen["num_real"] == gen["num_fake"] == 200 and "fid" not in gen
    assert gen["fd_vgg16"] > 0 and gen["kd_vgg16_mean"] > 0
    assert gen["recall"] < 0.1 and gen["precision"] < 0.1   # flat colours cover none of the noise's features
    assert gen["classifier_accuracy"] == result["classifier"]["accuracy"] >= 0.9
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
