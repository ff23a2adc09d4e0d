"""Stage 2 end to end on the tiny preset: tokens, the prior's step, its run folder, sample.py."""
import glob
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import GPT2Config

from configs import demo
from vqgan_jax import generate, gpt2_hf, parallel, runs, tokens as tokens_lib
from vqgan_jax import metrics as metrics_lib
from vqgan_jax.checkpoint import Checkpointer
from vqgan_jax.errors import UserError
from vqgan_jax.stage2 import PriorSetup, make_gpt2_config, train_prior
from vqgan_jax.steps import PriorTokens

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny():
    return demo.get_config("tiny")


def test_prior_run_folder(run_dir):
    out = os.path.join(run_dir, "prior")
    assert json.load(open(os.path.join(out, "config.json")))["prior"]["n_layer"] == 2
    assert Checkpointer(os.path.join(out, "checkpoints"), async_save=False).all_steps() == [2, 4]
    rows = metrics_lib.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert {"step", "loss", "accuracy", "tokens_per_sec"} <= set(rows[-1])
    assert glob.glob(os.path.join(out, "tb", "events.out.tfevents.*"))
    meta = tokens_lib.read_meta(run_dir)
    # 64 synthetic training images, plus their flipped copies; a 16 px image with ch_mult (1, 2) -> 8x8.
    assert meta["count"] == 128 and meta["grid"] == [8, 8] and meta["num_classes"] == 6
    ids, labels, _ = tokens_lib.load_tokens(run_dir)
    assert ids.shape == (128, 64) and ids.max() < 32 and labels.shape == (128,)


def test_token_shards_round_trip(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1024, (5, 4, 4))
    labels = np.arange(5)
    path = tokens_lib.save_shard(str(tmp_path), "shard_0_00000.npz", ids, labels)
    with np.load(path) as z:
        assert z["ids"].dtype == np.uint16 and z["labels"].dtype == np.int32
        np.testing.assert_array_equal(z["ids"], ids)
        np.testing.assert_array_equal(z["labels"], labels)


def test_tokens_are_reused(run_dir, capsys):
    _, setup, state, step = tokens_lib.restore_vqgan(run_dir)
    meta = tokens_lib.encode_training_set(run_dir, runs.read_config(run_dir, "vqgan"), setup, state, step, flip=True)
    assert "reusing 128 token grids" in capsys.readouterr().out
    assert meta["vqgan_step"] == 4


def prior_setup(mesh=None, num_classes=3):
    cfg = tiny().prior
    cfg.dropout = 0.0
    tok = PriorTokens(num_codes=16, num_classes=num_classes)
    return PriorSetup(cfg, tok, make_gpt2_config(cfg, tok, 1 + 16), mesh), tok


def prior_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"ids": rng.integers(0, 16, (n, 16)).astype(np.int32), "label": rng.integers(0, 3, (n,)).astype(np.int32)}


def run_prior(setup, batch, steps):
    state = setup.init_state(0)
    gb = parallel.global_batch(batch, setup.mesh)
    out = []
    for s in range(steps):
        state, m = setup.step(state, gb, jax.random.fold_in(jax.random.PRNGKey(0), s))
        out.append({k: float(v) for k, v in jax.device_get(m).items()})
    return state, out


def test_prior_overfits_a_tiny_token_set():
    setup, _ = prior_setup(parallel.make_mesh(jax.devices()[:1]))
    setup.cfg.lr, setup.cfg.num_steps, setup.cfg.warmup_steps = 1e-2, 120, 10  # the cosine spans the run
    setup.cfg.label_dropout = 0.0  # a dropped class token makes the first code ambiguous
    setup = PriorSetup(setup.cfg, setup.tokens, setup.gpt2_config, setup.mesh)
    _, ms = run_prior(setup, prior_batch(), 120)
    assert ms[0]["loss"] > 2.5                      # ~ log(16) at the start
    assert ms[-1]["loss"] < 0.3 and ms[-1]["accuracy"] > 0.95


def test_prior_step_eight_devices_equal_one():
    s8, _ = prior_setup()
    s1, _ = prior_setup(parallel.make_mesh(jax.devices()[:1]))
    _, m8 = run_prior(s8, prior_batch(), 3)
    _, m1 = run_prior(s1, prior_batch(), 3)
    for a, b in zip(m8, m1):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_label_dropout_and_class_tokens():
    tok = PriorTokens(num_codes=16, num_classes=3)
    assert tok.vocab_size == 20 and tok.null_token == 16
    np.testing.assert_array_equal(tok.first_token(jnp.array([0, 2])), [17, 19])
    np.testing.assert_array_equal(PriorTokens(16).first_token(jnp.array([0, 2])), [16, 16])
    prompt, cfg = generate.make_prompt(tok, 2, labels=[1, 2], cfg_scale=3.0)
    np.testing.assert_array_equal(prompt[:, 0], [18, 19, 16, 16])
    assert cfg == 3.0
    prompt, cfg = generate.make_prompt(tok, 2, labels=[1, 2], cfg_scale=1.0)
    assert prompt.shape == (2, 1) and cfg is None
    with pytest.raises(UserError, match="outside the prior's classes"):
        generate.make_prompt(tok, 1, labels=[3])
    with pytest.raises(UserError, match="unconditional"):
        generate.make_prompt(PriorTokens(16), 1, labels=[0])


def test_sampled_grids_use_codes_only_and_repeat_with_the_seed(run_dir):
    model, params, tok, layout, _ = generate.load_prior(run_dir)
    kw = dict(labels=[1, 2], temperature=1.0, top_k=0, top_p=1.0, cfg_scale=2.0)
    a = generate.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3), **kw)
    b = generate.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3), **kw)
    assert a.shape == (2, 8, 8) and a.max() < tok.num_codes and a.min() >= 0
    np.testing.assert_array_equal(a, b)
    first = generate.sample_grids(model, params, tok, layout["grid"], 2, jax.random.PRNGKey(3),
                                  first_codes=[5, 7], top_k=4)
    np.testing.assert_array_equal(first[:, 0, 0], [5, 7])


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


def test_reconstruct_writes_originals_over_reconstructions(run_dir, tmp_path):
    from PIL import Image
    from vqgan_jax import pictures
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20, 24), c).save(folder / f"{i}.png")
    out = pictures.write_reconstructions(run_dir, str(folder), str(tmp_path / "recon.png"))
    picture = np.asarray(Image.open(out))
    assert picture.shape == (2 + 2 * 18, 2 + 3 * 18, 3)   # 2 rows x 3 columns of 16 px tiles, 2 px gaps
    np.testing.assert_array_equal(picture[2:18, 2:18], np.broadcast_to([255, 0, 0], (16, 16, 3)))
    with pytest.raises(UserError, match="cannot read image"):
        (folder / "bad.png").write_bytes(b"not an image")
        pictures.write_reconstructions(run_dir, str(folder / "bad.png"), str(tmp_path / "r2.png"))


def test_missing_stage1_and_missing_prior_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no vqgan checkpoint"):
        train_prior(tiny(), str(tmp_path / "empty"))
    r = sample_cli("--workdir", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "error: no prior in" in r.stderr and "Traceback" not in r.stderr


def test_init_from_a_hugging_face_gpt2(tmp_path, run_dir):
    """seed 000's recipe: fine-tune a pretrained GPT-2 after resizing its embeddings to the codebook."""
    hf = GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    from vqgan_jax.gpt2 import GPT2LMHeadModel
    params = GPT2LMHeadModel(hf).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    gpt2_hf.save_pretrained(str(tmp_path / "hf"), hf, params)
    work = str(tmp_path / "w")
    import shutil
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(work, "vqgan"))
    cfg = tiny()
    cfg.prior.init_from = str(tmp_path / "hf")
    cfg.prior.num_steps = 2
    train_prior(cfg, work)
    _, p2, tok, _, _ = generate.load_prior(work)
    assert p2["wte"]["embedding"].shape == (tok.vocab_size, 32)
    assert p2["wpe"]["embedding"].shape == (1 + 64, 32)
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cfg2 = tiny()
    cfg2.prior.init_from = str(bad)
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(tmp_path, "w2", "vqgan"))
    with pytest.raises(UserError, match="GPT-2"):
        train_prior(cfg2, str(tmp_path / "w2"))


def test_token_batches_resume_exactly():
    """The batch of step s is a pure function of s: a resumed prior run sees the same batches."""
    from vqgan_jax.stage2 import token_batches
    ids = np.arange(40 * 4).reshape(40, 4)
    labels = np.arange(40)
    straight = token_batches(ids, labels, global_batch=8, seed=1, start_step=0)
    first = [next(straight) for _ in range(12)]      # 12 steps = 2.4 epochs of 5 batches
    resumed = token_batches(ids, labels, global_batch=8, seed=1, start_step=7)
    for want in first[7:]:
        got = next(resumed)
        np.testing.assert_array_equal(got["ids"], want["ids"])
        np.testing.assert_array_equal(got["label"], want["label"])
    epoch0 = np.concatenate([b["label"] for b in first[:5]])
    assert sorted(epoch0.tolist()) == list(range(40))  # every grid once per epoch
    assert not np.array_equal(epoch0, np.concatenate([b["label"] for b in first[5:10]]))  # reshuffled
