"""The training pictures on a hand-made run folder: montage layout and exact pixels, frame choice, loss curves, names."""
import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from vqgan_jax.viz import curves, montage, training
from vqgan_jax.viz import images as images_lib
from vqgan_jax.errors import UserError

N, H = 3, 8  # 3 shown images of 8x8 pixels per stage-1 picture
PAD = montage.PAD


def recon_picture(step: int) -> np.ndarray:
    """originals_over_reconstructions of fixed originals and step-dependent reconstructions."""
    rng = np.random.default_rng(0)
    originals = rng.uniform(-1, 1, (N, H, H, 3))
    recon = np.clip(originals + np.random.default_rng(step).normal(0, 0.3, originals.shape), -1, 1)
    return images_lib.originals_over_reconstructions(originals, recon)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def vqgan_rows(steps):
    rows = []
    for s in steps:
        # No g/perceptual (perceptual_weight 0): that panel is left out.
        rows.append({"step": s, "g/rec": 1.0 / s, "g/commit": 0.1, "g/adv": 0.5, "d/loss": 2.0 - s / 1e4,
                     "d_weight": 0.8, "codebook/usage": min(1.0, s / 1e3), "codebook/perplexity": s / 10,
                     "images_per_sec": 50.0})
        if s % 500 == 0:  # eval numbers in their own row with the same step, as loops.run writes them
            rows.append({"step": s, "eval/rec": 1.1 / s, "eval/psnr": 20.0, "eval/usage": 0.9,
                         "eval/perplexity": s / 12})
    return rows


def make_vqgan_stage(workdir, steps):
    for s in steps:
        images_lib.save_png(os.path.join(workdir, "vqgan", "images", f"step_{s:07d}.png"), recon_picture(s))
    write_jsonl(os.path.join(workdir, "vqgan", "metrics.jsonl"), vqgan_rows(steps))


def make_prior_stage(workdir, steps, tile=8):
    for s in steps:
        x = np.random.default_rng(s).integers(0, 256, (8, tile, tile, 3), dtype=np.uint8)
        images_lib.save_png(os.path.join(workdir, "prior", "images", f"step_{s:07d}.png"), images_lib.grid(x, 8))
    write_jsonl(os.path.join(workdir, "prior", "metrics.jsonl"),
                [{"step": s, "loss": 6.0 - s / 1e3, "accuracy": s / 1e4, "tokens_per_sec": 1e4} for s in steps])


def load(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_montage_layout_first_last_and_exact_rows(tmp_path):
    steps = list(range(100, 2001, 100))  # 20 pictures, more than max_frames
    make_vqgan_stage(str(tmp_path), steps)
    image_dir = str(tmp_path / "vqgan" / "images")
    out = montage.evolution_montage(image_dir, str(tmp_path / "m.png"), max_frames=5)
    m = load(out)
    grid_h, grid_w = recon_picture(100).shape[:2]
    assert (grid_h, grid_w) == (2 * (H + PAD) + PAD, N * (H + PAD) + PAD)
    assert m.shape == ((1 + 5) * (H + PAD) + PAD, grid_w + montage.LABEL_WIDTH, 3)  # originals + 5 frames

    chosen = [steps[i] for i in montage.choose_frames(steps, 5)]
    assert chosen[0] == 100 and chosen[-1] == 2000 and len(chosen) == 5
    body = m[:, montage.LABEL_WIDTH:]
    src = load(os.path.join(image_dir, "step_0000100.png"))
    np.testing.assert_array_equal(body[: PAD + H], src[: PAD + H])  # originals once, on top
    band = lambda i: body[(i + 1) * (H + PAD): (i + 2) * (H + PAD)]  # frame i's gap + reconstructions
    for i, s in enumerate(chosen):
        src = load(os.path.join(image_dir, f"step_{s:07d}.png"))
        np.testing.assert_array_equal(band(i), src[PAD + H: 2 * (PAD + H)])
    assert not np.array_equal(band(0), band(4))  # the frames really differ
    assert (m[:, : montage.LABEL_WIDTH] < 128).any()  # step numbers are drawn in the margin

    bare = load(montage.evolution_montage(image_dir, str(tmp_path / "bare.png"), max_frames=30, label=False))
    assert bare.shape == ((1 + 20) * (H + PAD) + PAD, grid_w, 3)  # all 20 frames, no margin


def test_choose_frames_spread_over_time():
    assert montage.choose_frames([5, 10, 15], 12) == [0, 1, 2]
    assert montage.choose_frames([5, 10, 15], 1) == [2]
    # Dense pictures early, sparse late (image_every raised on resume): spread over steps, not files.
    steps = list(range(10, 101, 10)) + [1000, 2000]
    assert [steps[i] for i in montage.choose_frames(steps, 3)] == [10, 1000, 2000]
    with pytest.raises(ValueError):
        montage.choose_frames(steps, 0)


def test_sample_montage_stacks_and_scales(tmp_path):
    make_prior_stage(str(tmp_path), [50, 100])
    image_dir = str(tmp_path / "prior" / "images")
    m = load(montage.evolution_montage(image_dir, str(tmp_path / "s.png")))  # "auto": DIR/prior -> samples
    g = load(os.path.join(image_dir, "step_0000050.png"))
    assert m.shape == (2 * g.shape[0], g.shape[1] + montage.LABEL_WIDTH, 3)
    np.testing.assert_array_equal(m[: g.shape[0], montage.LABEL_WIDTH:], g)  # whole grids, unscaled

    wide = tmp_path / "wide"
    make_prior_stage(str(wide), [1], tile=140)  # 8 * 142 + 2 = 1138 pixels wide
    m = load(montage.evolution_montage(str(wide / "prior" / "images"), str(tmp_path / "w.png"), kind="samples"))
    assert m.shape[1] == montage.MAX_WIDTH + montage.LABEL_WIDTH
    assert m.shape[0] == round((140 + 2 * PAD) * montage.MAX_WIDTH / 1138)


def test_empty_inputs_give_none(tmp_path):
    os.makedirs(tmp_path / "empty")
    assert montage.evolution_montage(str(tmp_path / "empty"), str(tmp_path / "a.png")) is None
    assert montage.evolution_montage(str(tmp_path / "missing"), str(tmp_path / "a.png")) is None
    (tmp_path / "metrics.jsonl").write_text("")
    assert curves.loss_curves(str(tmp_path / "metrics.jsonl"), str(tmp_path / "b.png")) is None
    assert not glob.glob(str(tmp_path / "*.png"))


def test_loss_curves_png_and_series(tmp_path):
    rows = vqgan_rows(range(100, 1001, 100))
    write_jsonl(str(tmp_path / "metrics.jsonl"), rows)
    steps, values = curves.metric_series(rows, "eval/rec")
    np.testing.assert_array_equal(steps, [500, 1000])
    np.testing.assert_allclose(values, [1.1 / 500, 1.1 / 1000])
    assert len(curves.metric_series(rows, "g/perceptual")[0]) == 0
    titles = [t for t, _ in curves.plot_panels(rows, "vqgan")]
    assert "perceptual loss" not in titles and len(titles) == 7  # missing key: panel left out
    zeros = [dict(r, **{"g/perceptual": 0.0}) for r in rows]  # perceptual_weight 0 logs zeros
    assert "perceptual loss" not in [t for t, _ in curves.plot_panels(zeros, "vqgan")]
    ones = [dict(r, **{"g/perceptual": 0.3}) for r in rows]
    assert len(curves.plot_panels(ones, "vqgan")) == 8
    out = curves.loss_curves(str(tmp_path / "metrics.jsonl"), str(tmp_path / "curves.png"))
    with Image.open(out) as im:
        im.load()
        assert im.size[0] >= 600 and im.size[1] >= 500  # 7 panels: 3 columns x 3 rows
    pixels = load(out)
    assert pixels.std() > 10  # drawn, not blank
    write_jsonl(str(tmp_path / "p.jsonl"), [{"step": s, "loss": 5.0 / s, "accuracy": 0.1} for s in (1, 2, 3)])
    with Image.open(curves.loss_curves(str(tmp_path / "p.jsonl"), str(tmp_path / "p.png"), stage="prior")) as im:
        assert im.size[0] >= 400


def test_write_training_pictures_names(tmp_path):
    one, both = str(tmp_path / "one"), str(tmp_path / "both")
    make_vqgan_stage(one, [100, 200, 300])
    got = training.write_training_pictures(one, tensorboard=False)
    assert got == {"vqgan/evolution": os.path.join(one, "pictures", "vqgan", "evolution.png"),
                   "vqgan/loss_curves": os.path.join(one, "pictures", "vqgan", "loss_curves.png")}
    assert all(os.path.isfile(p) for p in got.values())

    make_vqgan_stage(both, [100, 200])
    make_prior_stage(both, [10, 20, 30])
    got = training.write_training_pictures(both, str(tmp_path / "out"), tensorboard=True)
    assert sorted(got) == ["prior/evolution", "prior/loss_curves", "vqgan/evolution", "vqgan/loss_curves"]
    assert got["prior/evolution"] == str(tmp_path / "out" / "prior" / "evolution.png")
    assert load(got["prior/evolution"]).shape[0] == 3 * load(os.path.join(both, "prior", "images",
                                                                          "step_0000010.png")).shape[0]
    for stage in ("vqgan", "prior"):
        assert glob.glob(os.path.join(both, stage, "tb", "events.out.tfevents.*"))

    with pytest.raises(UserError, match="not a run folder"):
        training.write_training_pictures(str(tmp_path / "nothing"), tensorboard=False)
