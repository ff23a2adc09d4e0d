"""Image folders that once broke runs: truncated JPEGs, symlink loops, 16-bit PNGs."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from configs.base import get_base_config
from vqgan_jax.data import folders, images, pipeline as data
from vqgan_jax.errors import UserError


def _cfg(root, **overrides):
    cfg = get_base_config().data
    cfg.source, cfg.dir, cfg.image_size, cfg.eval_fraction = "folder", str(root), 16, 0.25
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def _jpeg_bytes(seed, size=48):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_truncated_jpegs_pass_pil_verify_but_are_caught():
    data = _jpeg_bytes(0)[:-400]
    with Image.open(io.BytesIO(data)) as im:
        im.verify()  # why a verify-only scan let them through


def test_a_folder_of_only_truncated_jpegs_ends_with_one_line(tmp_path):
    for i in range(6):
        _write(str(tmp_path / "d" / f"{i}.jpg"), _jpeg_bytes(i)[:-400])
    with pytest.raises(UserError, match=r"none of the 6 images .* can be opened"):
        data.dataset_info(_cfg(tmp_path / "d"))


def test_truncated_jpegs_among_good_ones_are_skipped_and_counted(tmp_path):
    for i in range(12):
        _write(str(tmp_path / "d" / f"good{i:02d}.jpg"), _jpeg_bytes(i))
    for i in range(3):
        _write(str(tmp_path / "d" / f"bad{i}.jpg"), _jpeg_bytes(100 + i)[:-400])
    scan = folders.scan_folder(str(tmp_path / "d"), 0.25)
    assert sorted(scan.skipped) == ["bad0.jpg", "bad1.jpg", "bad2.jpg"]
    assert len(scan.train) + len(scan.eval) == 12
    info = data.dataset_info(_cfg(tmp_path / "d"))
    assert info["num_skipped"] == 3 and info["num_train"] + info["num_eval"] == 12
    # Every training element decodes: a pass over the split yields all of its images.
    cfg = _cfg(tmp_path / "d")
    got = sum(len(b["label"]) for b in data.iterate_numpy(data.make_dataset(
        cfg, split="train", global_batch_size=1, seed=0, training=False)))
    assert got == info["num_train"]


def test_symlink_loop_inside_a_class_folder(tmp_path):
    root = tmp_path / "d"
    for cls in ("a", "b"):
        for i in range(10):
            _write(str(root / cls / f"{cls}{i}.jpg"), _jpeg_bytes(hash((cls, i)) % 1000))
    os.symlink("..", root / "a" / "loop")        # a/loop -> the root: a loop back into the tree
    os.symlink(str(root), root / "c")           # a class folder that is the root itself
    os.symlink(str(root / "b" / "b0.jpg"), root / "a" / "also_b0.jpg")  # one file reachable twice
    scan = folders.scan_folder(str(root), 0.3)
    items = scan.train + scan.eval
    assert scan.class_names == ("a", "b")
    assert len(items) == 20                                   # 20 files, not 820
    reals = [os.path.realpath(p) for p, _ in items]
    assert len(set(reals)) == 20                              # each file once
    assert not {os.path.realpath(p) for p, _ in scan.train} & {os.path.realpath(p) for p, _ in scan.eval}
    for path, label in items:
        assert os.path.basename(os.path.realpath(path))[0] == "ab"[label], (path, label)


def test_16_bit_png_decodes_the_same_everywhere(tmp_path):
    rng = np.random.default_rng(0)
    pixels16 = (rng.integers(0, 256, (16, 16, 3)).astype(np.uint16) * 257)  # 8-bit values stretched to 16
    path = str(tmp_path / "d" / "x.png")
    os.makedirs(os.path.dirname(path))
    Image.fromarray(pixels16[..., 0]).save(path)              # 16-bit grayscale ('I;16')
    _write(str(tmp_path / "d" / "y.png"), open(path, "rb").read())
    one = images.load_image(path, 16)
    cfg = _cfg(tmp_path / "d", eval_fraction=0.0)
    batch = next(data.iterate_numpy(data.make_dataset(cfg, split="train", global_batch_size=2, seed=0,
                                                      training=False)))
    np.testing.assert_allclose(batch["image"][0], one, atol=1e-5)
    want = pixels16[..., 0].astype(np.float32) / 257 / 127.5 - 1
    np.testing.assert_allclose(one[..., 0], want, atol=2 / 255)   # not clipped to white
    assert abs(float((one.mean() + 1) * 127.5) - float(pixels16[..., 0].mean() / 257)) < 1.0


def test_load_image_errors_are_one_line(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        images.load_image(str(tmp_path / "none.png"), 16)
    _write(str(tmp_path / "bad.png"), b"not an image at all")
    with pytest.raises(UserError, match="cannot read image"):
        images.load_image(str(tmp_path / "bad.png"), 16)
