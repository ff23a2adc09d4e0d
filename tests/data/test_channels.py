"""data.channels: grayscale batches (1 channel) from TFDS mnist under tfds.testing.mock_data, the synthetic
images and folders; a TFDS data set that was never prepared says how to build it, in one line."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from configs.dcgan import mnist
from vqgan_jax.data import pipeline as data
from vqgan_jax.errors import UserError


def _batches(cfg, n, **kwargs):
    it = data.iterate_numpy(data.make_dataset(cfg, **kwargs))
    return [b for b, _ in zip(it, range(n))]


def mnist_data(tmp_path):
    c = mnist.get_config()
    c.unlock()
    c.data.dir = str(tmp_path)
    return c.data


def _digit_records(builder, split, decoders=None, read_config=None, **kwargs):
    """Mock mnist records: 20 examples, label i % 10, each a 28x28x1 PNG of solid grey 10 * label."""
    labels = np.arange(20) % 10
    images = [tf.io.encode_png(np.full((28, 28, 1), 10 * label, np.uint8)) for label in labels]
    return tf.data.Dataset.from_tensor_slices({"image": tf.stack(images), "label": labels.astype(np.int64)})


def test_mnist_under_mock_data_is_one_channel(tmp_path):
    cfg = mnist_data(tmp_path)
    with tfds.testing.mock_data(num_examples=16):
        info = data.dataset_info(cfg)
        [batch] = _batches(cfg, 1, split="train", global_batch_size=8, seed=0, training=True)
    assert info["num_classes"] == 10 and info["num_train"] == 16
    assert batch["image"].shape == (8, 32, 32, 1) and batch["image"].dtype == np.float32
    assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    with tfds.testing.mock_data(as_dataset_fn=_digit_records):
        [evals] = _batches(cfg, 1, split="eval", global_batch_size=20, seed=0, training=False)
    # a solid grey digit stays that grey through the 28 -> 32 resize, in one channel
    np.testing.assert_allclose(evals["image"][..., 0].mean(axis=(1, 2)), 10 * evals["label"] / 127.5 - 1,
                               atol=1e-4)


def test_mnist_not_prepared_says_how(tmp_path):
    with pytest.raises(UserError, match=r"'mnist' is not prepared in .*: run `tfds build mnist --data_dir="):
        data.dataset_info(mnist_data(tmp_path))


def test_synthetic_one_channel_is_the_luma_of_rgb():
    cfg = mnist.get_config("tiny").data
    gray = _batches(cfg, 1, split="eval", global_batch_size=8, seed=0, training=False)[0]["image"]
    cfg.unlock()
    cfg.channels = 3
    rgb = _batches(cfg, 1, split="eval", global_batch_size=8, seed=0, training=False)[0]["image"]
    assert gray.shape == (8, 16, 16, 1) and rgb.shape == (8, 16, 16, 3)
    luma = ((rgb + 1) * 127.5) @ np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601, tf.image.rgb_to_grayscale's
    np.testing.assert_allclose((gray[..., 0] + 1) * 127.5, luma, atol=0.05)


def test_folder_of_colour_images_as_grayscale(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((20, 30, 3), (200, 100, 50), np.uint8)).save(tmp_path / f"{i}.png")
    cfg = mnist.get_config("tiny").data
    cfg.unlock()
    cfg.source, cfg.dir, cfg.eval_fraction = "folder", str(tmp_path), 0.0
    [batch] = _batches(cfg, 1, split="train", global_batch_size=4, seed=0, training=True)
    assert batch["image"].shape == (4, 16, 16, 1)
    # TF's JPEG/PNG decoder converts with its own integer luma (~0.299 R + 0.587 G + 0.114 B).
    np.testing.assert_allclose((batch["image"] + 1) * 127.5, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, atol=1.0)


def test_bad_channel_count():
    cfg = mnist.get_config("tiny").data
    cfg.unlock()
    cfg.channels = 2
    with pytest.raises(UserError, match="data.channels=2"):
        data.make_dataset(cfg, split="train", global_batch_size=8, seed=0, training=True)
