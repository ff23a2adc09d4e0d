"""The autoregressive prior's trainer on the tiny preset: token encoding, its step (overfits, 8 devices = 1),
its run folder, fine-tuning a Hugging Face GPT-2, resumable batches."""
import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import GPT2Config

from configs import demo
from vqgan_jax.data import tokens as tokens_lib
from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.errors import UserError
from vqgan_jax.interop import hf_gpt2
from vqgan_jax.train import loading, parallel, runs
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.ar_prior import PriorSetup, encode_training_set, make_gpt2_config, token_batches, train, vqgan_encoder


def tiny():
    return demo.get_config("tiny")


def test_prior_run_folder(run_dir):
    out = os.path.join(run_dir, "prior")
    assert json.load(open(os.path.join(out, "config.json")))["prior"]["n_layer"] == 2
    assert Checkpointer(os.path.join(out, "checkpoints"), async_save=False).all_steps() == [2, 4]
    rows = metrics_lib.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert {"step", "loss", "accuracy", "tokens_per_sec"} <= set(rows[-1])
    assert glob.glob(os.path.join(out, "tb", "events.out.tfevents.*"))
    meta = tokens_lib.read_meta(runs.tokens_dir(run_dir))
    # 64 synthetic training images, plus their flipped copies; a 16 px image with ch_mult (1, 2) -> 8x8.
    assert meta["count"] == 128 and meta["grid"] == [8, 8] and meta["num_classes"] == 6
    ids, labels, _ = tokens_lib.load_tokens(runs.tokens_dir(run_dir))
    assert ids.shape == (128, 64) and ids.max() < 32 and labels.shape == (128,)


def test_tokens_are_reused(run_dir, capsys):
    vq = loading.load_vqgan(run_dir)
    meta = encode_training_set(run_dir, vq.config.data, vqgan_encoder(vq, True), vq.mesh, vq.step,
                               num_codes=32, flip=True)
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


@pytest.mark.slow
def test_init_from_a_hugging_face_gpt2(tmp_path, run_dir):
    """The Flowers102 study's recipe: fine-tune a pretrained GPT-2 after resizing its embeddings to the codebook."""
    hf = GPT2Config(vocab_size=50, n_positions=32, n_embd=32, n_layer=2, n_head=2)
    from vqgan_jax.models.gpt2 import GPT2LMHeadModel
    params = GPT2LMHeadModel(hf).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"]
    hf_gpt2.save_pretrained(str(tmp_path / "hf"), hf, params)
    work = str(tmp_path / "w")
    import shutil
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(work, "vqgan"))
    cfg = tiny()
    cfg.prior.init_from = str(tmp_path / "hf")
    cfg.prior.num_steps = 2
    train(cfg, work)
    prior = loading.load_prior(work)
    p2, tok = prior.variables["params"], prior.tokens
    assert p2["wte"]["embedding"].shape == (tok.vocab_size, 32)
    assert p2["wpe"]["embedding"].shape == (1 + 64, 32)
    bad = tmp_path / "bert"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cfg2 = tiny()
    cfg2.prior.init_from = str(bad)
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(tmp_path, "w2", "vqgan"))
    with pytest.raises(UserError, match="GPT-2"):
        train(cfg2, str(tmp_path / "w2"))


def test_token_batches_resume_exactly():
    """The batch of step s is a pure function of s: a resumed prior run sees the same batches."""
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


def test_training_without_stage1_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="no vqgan checkpoint"):
        train(tiny(), str(tmp_path / "empty"))
