"""python -m vqgan_jax.stylize end to end on small images made here: a single image with --strip, a folder
batched, a style-weight sweep, and bad input as one line with exit status 2."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from vqgan_jax import stylize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def picture(path, h, w, seed):
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    coarse.resize((w, h), Image.BILINEAR).save(path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("style")
    photos = d / "photos"
    photos.mkdir()
    for i in range(3):
        picture(photos / f"p{i}.png", 40, 40 + 8 * i, i)  # p0 square, others cropped to squares
    (photos / "notes.txt").write_text("not an image")
    return {"content": picture(d / "photo.png", 30, 40, 7), "style": picture(d / "painting.jpg", 50, 36, 8),
            "photos": str(photos), "dir": d}


def run(capsys, *args):
    code = stylize.main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


FAST = ["--steps", "2", "--optimizer", "adam"]
# VGG16's first two blocks only: a much smaller program to compile than the default layers' (which the
# slow-tier runs below keep end to end)
SHALLOW = ["--content_layer", "relu2_2", "--style_layers", "relu1_1,relu2_1"]


def test_one_image_with_a_strip_and_two_scales(files, capsys, tmp_path):
    out = str(tmp_path / "styled.png")
    code, stdout, err = run(capsys, "--content", files["content"], "--style", files["style"], "--out", out,
                            "--size", "64", "--scales", "2", "--strip", *FAST, *SHALLOW)
    assert code == 0, err
    assert Image.open(out).size == (64, 48)                     # long side --size, aspect ratio kept
    assert "scale 1/2 24x32 step 2" in stdout and "scale 2/2 48x64 step 2" in stdout and "ETA" in stdout
    # 2 scales x (start + 2 snapshots), each frame at the final size, 2 px gaps
    assert Image.open(str(tmp_path / "styled_strip.png")).size == (6 * 64 + 7 * 2, 48 + 4)
    code, _, err = run(capsys, "--content", files["content"], "--style", files["style"], "--out", out,
                       "--size", "64", *FAST)
    assert code == 2 and "exists: pass --overwrite" in err


def test_scales_too_small_for_vgg(files, capsys, tmp_path):
    code, _, err = run(capsys, "--content", files["content"], "--style", files["style"],
                       "--out", str(tmp_path / "x.png"), "--size", "32", "--scales", "2", *FAST)
    assert code == 2 and "at least 16 px" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_folder_is_one_batch(files, capsys, tmp_path):
    out = str(tmp_path / "styled")
    code, _, err = run(capsys, "--content", files["photos"], "--style", files["style"], "--out", out,
                       "--size", "16", *FAST)
    assert code == 0, err
    assert sorted(os.listdir(out)) == ["p0.png", "p1.png", "p2.png"]
    assert all(Image.open(os.path.join(out, f)).size == (16, 16) for f in os.listdir(out))


@pytest.mark.slow
def test_a_style_weight_sweep_is_one_grid(files, capsys, tmp_path):
    out = str(tmp_path / "sweep.png")
    code, stdout, err = run(capsys, "--content", files["photos"] + "/p0.png", "--style", files["style"],
                            "--out", out, "--size", "16", "--sweep", "1e2,1e6", *FAST)
    assert code == 0, err
    assert Image.open(out).size == (2 * 16 + 3 * 2, 16 + 4) and "[weight 100]" in stdout


@pytest.mark.parametrize("case,needle", [
    ("missing", "no such image file"), ("unreadable", "cannot read image"), ("empty", "no images"),
    ("optimizer", "--optimizer"),
])
def test_bad_input_is_one_line(files, capsys, tmp_path, case, needle):
    content, extra = files["content"], []
    if case == "missing":
        content = str(tmp_path / "nope.jpg")
    elif case == "unreadable":
        content = str(files["dir"] / "photos" / "notes.txt")
    elif case == "empty":
        content = str(tmp_path)
    else:
        extra = ["--optimizer", "sgd"]
    code, _, err = run(capsys, "--content", content, "--style", files["style"], "--out",
                       str(tmp_path / "o.png"), "--size", "16", *extra)
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_module_entry_point_missing_file(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vqgan_jax.stylize", "--content", str(tmp_path / "a.jpg"),
                        "--style", str(tmp_path / "b.jpg"), "--out", str(tmp_path / "c.png")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"error: {tmp_path / 'a.jpg'}: no such image file"]
