"""Input pipelines: synthetic flowers, image folders (formats, corrupt files, splits, classes, shards,
resume), TFDS on a tiny data set built here and under tfds.testing.mock_data; all data made in tmp_path."""
import hashlib
import os
import time

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from vqgan_jax.data import folders, pipeline as data, synthetic
from vqgan_jax.errors import UserError


def _cfg(**overrides):
    cfg = get_base_config().data
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _batches(cfg, n=None, **kwargs):
    """The first n batches (all when n is None) of make_dataset(cfg, **kwargs) as numpy dicts."""
    it = data.iterate_numpy(data.make_dataset(cfg, **kwargs))
    return [b for b, _ in zip(it, range(n))] if n is not None else list(it)


def _save(path, array, mode=None, fmt=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(np.asarray(array, np.uint8))
    (image.convert(mode) if mode else image).save(path, fmt)


def _solid(h, w, rgb):
    return np.broadcast_to(np.asarray(rgb, np.uint8), (h, w, 3))


# ---- synthetic ----------------------------------------------------------------------------------------

def test_synthetic_images_are_deterministic_varied_and_independent_of_n():
    images, labels = synthetic.synthetic_flowers(32, 16, 7)
    again, again_labels = synthetic.synthetic_flowers.__wrapped__(32, 16, 7)  # bypass the cache
    np.testing.assert_array_equal(images, again)
    np.testing.assert_array_equal(labels, again_labels)
    first8, _ = synthetic.synthetic_flowers(32, 8, 7)
    np.testing.assert_array_equal(first8, images[:8])          # image i depends on (seed, i) only
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < synthetic.NUM_CLASSES
    assert images.reshape(16, -1).std(axis=1).min() > 20      # a flower on a background, never blank
    other, _ = synthetic.synthetic_flowers(32, 16, 8)
    assert np.abs(other.astype(int) - images).mean() > 10      # another seed draws other flowers


def test_synthetic_512_images_of_64px_generate_fast():
    start = time.perf_counter()
    images, labels = synthetic.synthetic_flowers.__wrapped__(64, 512, 123)
    elapsed = time.perf_counter() - start
    assert images.shape == (512, 64, 64, 3)
    assert set(np.unique(labels)) == set(range(synthetic.NUM_CLASSES))
    assert elapsed < 4.0, elapsed  # ~0.5 s unloaded; the bound leaves room for a busy shared machine


def test_synthetic_train_batches_shape_range_and_seed_determinism():
    cfg = _cfg(source="synthetic", image_size=32, synthetic_size=64)
    kw = dict(split="train", global_batch_size=16, training=True)
    a = _batches(cfg, 3, seed=0, **kw)
    b = _batches(cfg, 3, seed=0, **kw)
    c = _batches(cfg, 3, seed=1, **kw)
    first = a[0]
    assert first["image"].shape == (16, 32, 32, 3) and first["image"].dtype == np.float32
    assert first["label"].shape == (16,) and first["label"].dtype == np.int32
    assert first["image"].min() >= -1.0 and first["image"].max() <= 1.0
    assert first["image"].reshape(16, -1).std(axis=1).min() > 0.1
    assert 0 <= first["label"].min() and first["label"].max() < synthetic.NUM_CLASSES
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    assert not np.array_equal(a[0]["image"], c[0]["image"])


def test_synthetic_eval_is_the_eval_split_in_order_and_differs_from_train():
    cfg = _cfg(source="synthetic", image_size=32, synthetic_size=64)
    n_eval = synthetic.split_size("eval", 64)
    assert n_eval == 64
    batches = _batches(cfg, split="eval", global_batch_size=16, seed=0, training=False)
    assert len(batches) == 4                                    # one pass, no repeat
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    ref, ref_labels = synthetic.synthetic_flowers(32, n_eval, synthetic.SPLIT_SEEDS["eval"])
    np.testing.assert_allclose(images, ref / 127.5 - 1.0, atol=1e-6)  # no crop, no flip, no shuffle
    np.testing.assert_array_equal(labels, ref_labels)
    train, _ = synthetic.synthetic_flowers(32, 64, synthetic.SPLIT_SEEDS["train"])
    diffs = np.abs(train[:, None].astype(int) - ref[None]).mean(axis=(2, 3, 4))  # (train, eval)
    assert diffs.min() > 5                                      # no eval image is a train image


def test_training_flips_and_reshuffles_each_epoch():
    cfg = _cfg(source="synthetic", image_size=16, synthetic_size=64, random_flip=True)
    batch = _batches(cfg, 1, split="train", global_batch_size=32, seed=3, training=True)[0]["image"]
    ref, _ = synthetic.synthetic_flowers(16, 64, synthetic.SPLIT_SEEDS["train"])
    ref = ref / 127.5 - 1.0
    flipped = 0
    for image in batch:  # each output is a source image, as is or mirrored left-right
        plain = np.abs(ref - image).max(axis=(1, 2, 3)).min()
        mirror = np.abs(ref[:, :, ::-1] - image).max(axis=(1, 2, 3)).min()
        assert min(plain, mirror) < 1e-6
        flipped += mirror < 1e-6 <= plain
    assert 0 < flipped < 32

    cfg.random_flip = False
    epochs = _batches(cfg, 2, split="train", global_batch_size=64, seed=3, training=True)
    keys = [[hashlib.md5(x.tobytes()).hexdigest() for x in e["image"]] for e in epochs]
    assert sorted(keys[0]) == sorted(keys[1])                   # each batch is exactly one epoch
    assert keys[0] != keys[1]                                   # in a new order


def test_start_batch_resumes_the_same_stream_across_epochs():
    cfg = _cfg(source="synthetic", image_size=16, synthetic_size=64, random_flip=True)
    kw = dict(split="train", global_batch_size=16, seed=4, training=True)  # 4 batches per epoch
    full = _batches(cfg, 9, **kw)
    resumed = _batches(cfg, 3, start_batch=6, **kw)                        # mid-epoch 1 onwards
    for x, y in zip(full[6:], resumed):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["label"], y["label"])
    evals = _batches(cfg, 6, split="eval", global_batch_size=16, seed=0, training=False, repeat=True)
    again = _batches(cfg, 1, split="eval", global_batch_size=16, seed=0, training=False, repeat=True,
                     start_batch=5)                                        # 64 eval images: 4 per pass
    np.testing.assert_array_equal(evals[5]["image"], again[0]["image"])
    np.testing.assert_array_equal(evals[5]["image"], evals[1]["image"])


def test_synthetic_class_filter_and_info():
    cfg = _cfg(source="synthetic", image_size=16, synthetic_size=64, class_filter="5 petals")
    labels = _batches(cfg, 2, split="train", global_batch_size=8, seed=0, training=True)
    assert {int(x) for b in labels for x in b["label"]} == {2}
    _, all_labels = synthetic.synthetic_flowers(16, 64, synthetic.SPLIT_SEEDS["train"])
    info = data.dataset_info(cfg)
    assert info["num_classes"] == 6 and info["class_names"][2] == "5 petals"
    assert info["num_train"] == int(np.sum(all_labels == 2)) and info["num_skipped"] == 0


# ---- image folders ------------------------------------------------------------------------------------

@pytest.fixture
def mixed_folder(tmp_path):
    """Five readable images of different modes and shapes plus one corrupt file and one non-image."""
    root = tmp_path / "mixed"
    rng = np.random.default_rng(0)
    _save(str(root / "gray.jpg"), np.full((20, 33), 128), mode="L")
    _save(str(root / "pal.png"), _solid(30, 30, (0, 0, 255)), mode="P")
    yy, xx = np.mgrid[0:70, 0:50]
    _save(str(root / "photo.JPG"), np.stack([xx * 5, yy * 3, 255 - xx * 5], axis=-1))  # smooth ramps
    _save(str(root / "red.png"), _solid(30, 40, (255, 0, 0)))
    rgba = np.concatenate([_solid(36, 24, (0, 255, 0)), np.full((36, 24, 1), 128, np.uint8)], axis=-1)
    _save(str(root / "rgba.png"), rgba)
    (root / "zz_corrupt.jpg").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "notes.txt").write_text("not an image")
    return str(root)


def test_folder_decodes_every_mode_to_rgb_and_skips_the_corrupt_file(mixed_folder):
    cfg = _cfg(source="folder", dir=mixed_folder, image_size=16, eval_fraction=0.0)
    info = data.dataset_info(cfg)
    assert info == {"num_classes": 0, "class_names": [], "num_train": 5, "num_eval": 0, "num_skipped": 1}
    [batch] = _batches(cfg, split="train", global_batch_size=5, seed=0, training=False)
    images, labels = batch["image"], batch["label"]
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(labels, np.zeros(5, np.int32))
    gray, pal, photo, red, rgba = images                        # sorted file order
    np.testing.assert_allclose(gray, 128 / 127.5 - 1.0, atol=0.02)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)  # gray spread to 3 equal channels
    np.testing.assert_allclose(pal, np.broadcast_to([-1.0, -1.0, 1.0], pal.shape), atol=1e-5)
    np.testing.assert_allclose(red, np.broadcast_to([1.0, -1.0, -1.0], red.shape), atol=1e-5)
    np.testing.assert_allclose(rgba, np.broadcast_to([-1.0, 1.0, -1.0], rgba.shape), atol=1e-5)
    # The photo (70 high, 50 wide): rows 10..59 are the centred square, resized like PIL's bicubic.
    ref = Image.open(os.path.join(mixed_folder, "photo.JPG")).crop((0, 10, 50, 60))
    ref = ref.resize((16, 16), Image.BICUBIC)
    np.testing.assert_allclose(photo, np.asarray(ref) / 127.5 - 1.0, atol=0.03)


def test_center_crop_for_eval_and_random_crop_for_training(tmp_path):
    # 20 x 60 image: red | green | blue thirds. The centred 20 x 20 square is exactly the green third.
    stripes = np.concatenate([_solid(20, 20, c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))], axis=1)
    _save(str(tmp_path / "s" / "stripes.png"), stripes)
    cfg = _cfg(source="folder", dir=str(tmp_path / "s"), image_size=10, eval_fraction=0.0, random_flip=False)
    [batch] = _batches(cfg, split="train", global_batch_size=1, seed=0, training=False)
    np.testing.assert_allclose(batch["image"][0], np.broadcast_to([-1.0, 1.0, -1.0], (10, 10, 3)), atol=1e-5)
    crops = np.concatenate([b["image"] for b in
                            _batches(cfg, 30, split="train", global_batch_size=1, seed=0, training=True)])
    red_share = (crops[..., 0] > 0).mean(axis=(1, 2))           # how much of each crop is red
    blue_share = (crops[..., 2] > 0).mean(axis=(1, 2))
    assert red_share.max() > 0.3 and blue_share.max() > 0.3     # offsets reach both ends
    assert len({round(float(r), 2) for r in red_share - blue_share}) > 5


def test_folder_held_out_split_is_a_stable_hash_of_the_path(tmp_path):
    root = tmp_path / "many"
    for i in range(40):
        _save(str(root / f"img_{i:03d}.png"), _solid(8, 8, (i, 0, 0)))
    scan = folders.scan_folder(str(root), 0.25)
    expected_eval = {f"img_{i:03d}.png" for i in range(40)
                     if int(hashlib.md5(f"img_{i:03d}.png".encode()).hexdigest(), 16) % 10000 < 2500}
    train = {os.path.basename(p) for p, _ in scan.train}
    held = {os.path.basename(p) for p, _ in scan.eval}
    assert held == expected_eval and 0 < len(held) < 40
    assert not train & held and len(train | held) == 40
    for i in range(40, 60):  # new files never move old ones between splits
        _save(str(root / f"img_{i:03d}.png"), _solid(8, 8, (i, 0, 0)))
    rescan = folders.scan_folder(str(root), 0.25)
    assert held <= {os.path.basename(p) for p, _ in rescan.eval}
    assert train <= {os.path.basename(p) for p, _ in rescan.train}


@pytest.fixture
def class_folder(tmp_path):
    """cat/ holds 3 red images, dog/ 3 blue ones (one a level deeper), .hidden/ is ignored."""
    root = tmp_path / "classes"
    for i in range(3):
        _save(str(root / "cat" / f"c{i}.png"), _solid(12, 16, (255, 0, 0)))
    for i, sub in enumerate(("", "", "deep/")):
        _save(str(root / "dog" / f"{sub}d{i}.png"), _solid(16, 12, (0, 0, 255)))
    _save(str(root / ".hidden" / "x.png"), _solid(8, 8, (0, 255, 0)))
    return str(root)


def test_class_subfolders_give_labels_and_class_filter_keeps_one(class_folder):
    cfg = _cfg(source="folder", dir=class_folder, image_size=8, eval_fraction=0.0)
    info = data.dataset_info(cfg)
    assert info["class_names"] == ["cat", "dog"] and info["num_classes"] == 2 and info["num_train"] == 6
    [batch] = _batches(cfg, split="train", global_batch_size=6, seed=0, training=False)
    np.testing.assert_array_equal(batch["label"], [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(batch["image"][:, 0, 0], [[1, -1, -1]] * 3 + [[-1, -1, 1]] * 3, atol=1e-5)
    for keep in ("dog", "1"):
        cfg.class_filter = keep
        assert data.dataset_info(cfg)["num_train"] == 3
        [batch] = _batches(cfg, split="train", global_batch_size=3, seed=0, training=False)
        np.testing.assert_array_equal(batch["label"], [1, 1, 1])
        np.testing.assert_allclose(batch["image"][..., 2], 1.0, atol=1e-5)
    cfg.class_filter = "bird"
    with pytest.raises(UserError, match="'bird' is not a class.*'cat', 'dog'"):
        data.make_dataset(cfg, split="train", global_batch_size=1, seed=0, training=True)


def _numbered_folder(root, n):
    """n flat 8x8 images whose grey value 10 * i identifies image i."""
    for i in range(n):
        _save(os.path.join(root, f"n{i:02d}.png"), _solid(8, 8, (10 * i,) * 3))
    return root


def _ids(batches):
    values = np.concatenate([b["image"][:, 0, 0, 0] for b in batches])
    return [int(round((v + 1.0) * 127.5 / 10)) for v in values]


def test_process_shards_are_disjoint_equal_halves(tmp_path):
    root = _numbered_folder(str(tmp_path / "num"), 26)
    cfg = _cfg(source="folder", dir=root, image_size=8, eval_fraction=0.5)
    expected = sorted(int(os.path.basename(p)[1:3]) for p, _ in folders.scan_folder(root, 0.5).eval)
    assert len(expected) == 15                                  # odd, so one image is dropped
    shards = [_ids(_batches(cfg, split="eval", global_batch_size=2, seed=0, training=False,
                            process_index=i, process_count=2)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == len(expected) // 2      # odd remainder dropped, equal counts
    assert not set(shards[0]) & set(shards[1])
    assert set(shards[0]) | set(shards[1]) <= set(expected)
    assert len(set(shards[0]) | set(shards[1])) == 2 * (len(expected) // 2)


def test_folder_shuffle_is_seeded(tmp_path):
    root = _numbered_folder(str(tmp_path / "num"), 24)
    cfg = _cfg(source="folder", dir=root, image_size=8, eval_fraction=0.0)
    kw = dict(split="train", global_batch_size=8, training=True)
    a, b, c = (_ids(_batches(cfg, 6, seed=s, **kw)) for s in (5, 5, 6))
    assert a == b and a != c
    assert sorted(a[:24]) == sorted(a[24:]) == list(range(24))  # 3 x 8 = one epoch: every image once
    assert a[:24] != a[24:]                                     # in a new order each epoch
    assert _ids(_batches(cfg, 2, seed=5, start_batch=4, **kw)) == a[32:]


@pytest.mark.parametrize("make, message", [
    (lambda tmp: "", "data.dir is empty"),
    (lambda tmp: str(tmp / "missing"), "does not exist"),
    (lambda tmp: (tmp / "file.png").write_bytes(b"x") and str(tmp / "file.png"), "not a directory"),
    (lambda tmp: (tmp / "empty").mkdir() or str(tmp / "empty"), r"no images \(.jpg/.jpeg/.png.*found in"),
    (lambda tmp: [(tmp / "bad").mkdir(), (tmp / "bad" / "a.jpg").write_bytes(b"\x00" * 64),
                  (tmp / "bad" / "b.png").write_bytes(b"nope")] and str(tmp / "bad"),
     "none of the 2 images .* can be opened"),
])
def test_folder_errors(tmp_path, make, message):
    cfg = _cfg(source="folder", dir=make(tmp_path))
    with pytest.raises(UserError, match=message):
        data.make_dataset(cfg, split="train", global_batch_size=1, seed=0, training=True)


def test_other_user_errors(tmp_path, mixed_folder):
    with pytest.raises(UserError, match="needs labelled data.*no classes"):
        data.dataset_info(_cfg(source="folder", dir=mixed_folder, class_filter="cat"))
    _save(str(tmp_path / "mixed" / "cls" / "a.png"), _solid(8, 8, (1, 2, 3)))
    with pytest.raises(UserError, match=r"mixes 6 images \(e.g. gray.jpg\) with class folders \(cls\)"):
        data.dataset_info(_cfg(source="folder", dir=mixed_folder))
    with pytest.raises(UserError, match="multiple of the 3 processes"):
        data.make_dataset(_cfg(), split="train", global_batch_size=8, seed=0, training=True, process_count=3)
    with pytest.raises(UserError, match="data.source='imagenet'"):
        data.dataset_info(_cfg(source="imagenet"))
    with pytest.raises(UserError, match="fewer than one batch of 128"):  # 64 eval images, one pass
        data.make_dataset(_cfg(), split="eval", global_batch_size=128, seed=0, training=False)


# ---- TFDS ---------------------------------------------------------------------------------------------

tfds = pytest.importorskip("tensorflow_datasets")


class VqganJaxTinyImages(tfds.core.GeneratorBasedBuilder):
    """A real, locally built TFDS data set (registered as 'vqgan_jax_tiny_images'): example i of a split is
    a (10 + i) x 12 image of grey value 10 * i with label i % 3, so batches say which records they hold."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"])}))

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {"train": self._generate_examples(12), "test": self._generate_examples(7)}

    def _generate_examples(self, n):
        for i in range(n):
            yield i, {"image": np.full((10 + i, 12, 3), 10 * i, np.uint8), "label": i % 3}


def test_tfds_real_records_shard_per_process_and_shuffle_by_seed(tmp_path):
    builder = tfds.builder("vqgan_jax_tiny_images", data_dir=str(tmp_path))
    builder.download_and_prepare()
    record_order = [int(ex["image"][0, 0, 0]) // 10 for ex in tfds.as_numpy(builder.as_dataset(split="test"))]
    cfg = _cfg(source="tfds", tfds_name="vqgan_jax_tiny_images", dir=str(tmp_path), image_size=8)
    assert data.dataset_info(cfg) == {"num_classes": 3, "class_names": ["a", "b", "c"], "num_train": 12,
                                      "num_eval": 7, "num_skipped": 0}
    [evals] = _batches(cfg, split="eval", global_batch_size=7, seed=0, training=False)
    assert _ids([evals]) == record_order and sorted(record_order) == list(range(7))  # one pass, in order
    np.testing.assert_array_equal(evals["label"], np.array(record_order) % 3)
    shards = [_ids(_batches(cfg, split="eval", global_batch_size=2, seed=0, training=False,
                            process_index=i, process_count=2)) for i in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3 and not set(shards[0]) & set(shards[1])
    kw = dict(split="train", global_batch_size=12, training=True)
    a, b, c = ([_ids([x]) for x in _batches(cfg, 2, seed=s, **kw)] for s in (1, 1, 2))
    assert a == b and a != c
    assert sorted(a[0]) == sorted(a[1]) == list(range(12)) and a[0] != a[1]  # each epoch reshuffled
    assert [_ids([x]) for x in _batches(cfg, 1, seed=1, start_batch=1, **kw)] == a[1:]
    cfg.class_filter = "b"
    [batch] = _batches(cfg, split="train", global_batch_size=4, seed=0, training=False)
    assert sorted(_ids([batch])) == [1, 4, 7, 10]
    cfg.eval_split = "validation"
    with pytest.raises(UserError, match="eval_split='validation'.*has no split 'validation', only test, train"):
        data.dataset_info(cfg)


def _fake_prepared(data_dir, name, splits, label_names=None):
    """Write the metadata a `tfds build` leaves (dataset_info.json, features.json, label names) with split
    sizes, so the builder counts as prepared; the records themselves come from tfds.testing.mock_data."""
    builder = tfds.builder(name, data_dir=data_dir)
    if label_names is not None:  # cifar100 learns its names from the downloaded files, so stand-ins here
        builder.info.features["label"].names = label_names
    builder.info.set_splits(tfds.core.SplitDict(
        [tfds.core.SplitInfo(name=s, shard_lengths=[n], num_bytes=0) for s, n in splits.items()]))
    builder.data_path.mkdir(parents=True, exist_ok=True)
    builder.info.write_to_directory(builder.data_path)


@pytest.mark.parametrize("policy", ["AUTO", "USE_CODE"])
def test_tfds_flowers_under_mock_data(tmp_path, policy):
    # Plain mocking, no metadata files: no split sizes, so the pipeline counts the mocked records.
    cfg = _cfg(source="tfds", tfds_name="oxford_flowers102", dir=str(tmp_path), image_size=24)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy[policy]):
        info = data.dataset_info(cfg)
        train = _batches(cfg, 4, split="train", global_batch_size=4, seed=0, training=True)
        evals = _batches(cfg, split="eval", global_batch_size=4, seed=0, training=False)
    assert info["num_classes"] == 102 and info["class_names"][0] == "pink primrose"
    assert (info["num_train"], info["num_eval"], info["num_skipped"]) == (12, 12, 0)
    assert len(evals) == 3
    for batch in train + evals:  # mock images are random noise of random sizes: shapes and ranges only
        assert batch["image"].shape == (4, 24, 24, 3) and batch["image"].dtype == np.float32
        assert batch["image"].min() >= -1.0 and batch["image"].max() <= 1.0
        assert batch["label"].dtype == np.int32 and batch["label"].min() >= 0 and batch["label"].max() < 102


def _cifar_records(builder, split, decoders=None, read_config=None, **kwargs):
    """Mock records for cifar100: 200 examples, label i % 100, each image a solid grey of value 2 * label."""
    import tensorflow as tf
    labels = np.arange(200) % 100
    images = [tf.io.encode_png(np.full((32, 32, 3), 2 * label, np.uint8)) for label in labels]
    return tf.data.Dataset.from_tensor_slices({"image": tf.stack(images), "label": labels.astype(np.int64)})


def test_tfds_cifar100_class_filter_by_name_and_id(tmp_path):
    names = [f"class_{i}" for i in range(100)]
    names[0], names[86] = "apple", "telephone"                  # as in the real cifar100 label list
    _fake_prepared(str(tmp_path), "cifar100", {"train": 200, "test": 200}, label_names=names)
    cfg = _cfg(source="tfds", tfds_name="cifar100", dir=str(tmp_path), image_size=16)
    with tfds.testing.mock_data(data_dir=str(tmp_path), policy=tfds.testing.MockPolicy.USE_FILES,
                                as_dataset_fn=_cifar_records):
        for keep in ("telephone", "86"):
            cfg.class_filter = keep
            info = data.dataset_info(cfg)
            assert info["num_classes"] == 100 and info["class_names"][86] == "telephone"
            assert (info["num_train"], info["num_eval"]) == (2, 2)
            [batch] = _batches(cfg, 1, split="train", global_batch_size=2, seed=0, training=True)
            np.testing.assert_array_equal(batch["label"], [86, 86])
            np.testing.assert_allclose(batch["image"], 172 / 127.5 - 1.0, atol=1e-5)
        cfg.class_filter = "telephon"
        with pytest.raises(UserError, match="'telephon' is not a class of TFDS 'cifar100'.*'apple'"):
            data.make_dataset(cfg, split="train", global_batch_size=2, seed=0, training=True)


def test_tfds_not_prepared_fails_fast_with_the_build_command(tmp_path):
    cfg = _cfg(source="tfds", tfds_name="oxford_flowers102", dir=str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(UserError, match=f"not prepared in {tmp_path}: run `tfds build oxford_flowers102 "
                                        f"--data_dir={tmp_path}`.*data.source=folder"):
        data.make_dataset(cfg, split="train", global_batch_size=2, seed=0, training=True)
    assert time.perf_counter() - start < 5.0
    with pytest.raises(UserError, match="unknown TFDS dataset 'oxford_flowerz'"):
        data.dataset_info(_cfg(source="tfds", tfds_name="oxford_flowerz", dir=str(tmp_path)))
