"""The DCGAN trainer on the tiny preset: the run-folder contract and pictures, resume equality, sampling
from the stored weights and BatchNorm statistics; every DCGAN config loads and builds."""
import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.dcgan import mnist
from vqgan_jax.errors import UserError
from vqgan_jax.models import dcgan as dcgan_model
from vqgan_jax.sampling import dcgan as dcgan_sampling
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train import runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers import dcgan as dcgan_trainer
from vqgan_jax.trainers.dcgan_step import DCGANSetup


def tiny(num_steps=4):
    c = mnist.get_config("tiny")
    c.unlock()
    c.train.num_steps = num_steps
    return c


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("dcgan4"))
    last = dcgan_trainer.train(tiny(4), work)
    return work, last


def restore(work, step):
    c = runs.read_config(work, "dcgan")
    setup = DCGANSetup.shared(c)
    return setup, jax.device_get(Checkpointer(runs.checkpoint_dir(work, "dcgan"), async_save=False)
                                 .restore(setup.abstract_state(), step))


def test_run_folder_contract_and_pictures(run4):
    work, last = run4
    out = os.path.join(work, "dcgan")
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["model"]["name"] == "dcgan" and cfg["data"]["channels"] == 1 and cfg["data"]["num_classes"] == 6
    assert Checkpointer(os.path.join(out, "checkpoints"), async_save=False).all_steps() == [2, 4]
    rows = metrics_lib.read_metrics(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows] == [2, 4]
    assert {"d/loss", "g/loss", "d/real", "d/fake", "images_per_sec"} <= set(rows[-1])
    assert last["g/loss"] == rows[-1]["g/loss"]
    images = sorted(os.listdir(os.path.join(out, "images")))
    assert images == ["evolution.png", "final_samples.png", "loss_curves.png", "step_0000002.png",
                      "step_0000004.png"]
    assert os.listdir(os.path.join(out, "tb"))


def test_checkpoints_hold_the_batch_statistics(run4):
    _, state = restore(run4[0], 4)
    # Running means start at 0: after 4 training-mode passes they are not.
    assert all(float(np.abs(v["mean"]).max()) > 0 for v in state.g_stats.values())
    assert all(float(np.abs(v["mean"]).max()) > 0 for v in state.d_stats.values())


def test_resume_equals_an_uninterrupted_run(run4, tmp_path):
    work = str(tmp_path)
    dcgan_trainer.train(tiny(2), work)
    dcgan_trainer.train(tiny(4), work)  # continues from step 2
    _, a = restore(run4[0], 4)
    _, b = restore(work, 4)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    rows_a = metrics_lib.read_metrics(os.path.join(run4[0], "dcgan", "metrics.jsonl"))
    rows_b = metrics_lib.read_metrics(os.path.join(work, "dcgan", "metrics.jsonl"))
    strip = lambda r: {k: v for k, v in r.items() if k != "images_per_sec"}  # noqa: E731
    assert [strip(r) for r in rows_a] == [strip(r) for r in rows_b]


def test_sampling_uses_the_stored_weights_and_statistics(run4):
    work = run4[0]
    x = dcgan_sampling.generate(work, 5, seed=0, batch_size=4)
    assert x.shape == (5, 16, 16, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, dcgan_sampling.generate(work, 5, seed=0, batch_size=2))  # per image
    assert not np.array_equal(x, dcgan_sampling.generate(work, 5, seed=1, batch_size=4))
    setup, state = restore(work, 4)
    z = dcgan_sampling.noise(0, 0, 5, setup.z_dim)
    by_hand = setup.gen.apply({"params": state.g_params, "batch_stats": state.g_stats}, z, train=False)
    np.testing.assert_array_equal(x, np.clip(np.round((np.asarray(by_hand) + 1) * 127.5), 0, 255).astype(np.uint8))
    fresh = jax.tree.map(jnp.zeros_like, state.g_stats)
    other = setup.gen.apply({"params": state.g_params, "batch_stats": fresh}, z, train=False)
    assert float(jnp.abs(other - by_hand).max()) > 1e-3   # so the statistics matter, and were used


def test_sampling_bad_input(run4, tmp_path):
    with pytest.raises(UserError, match="class-conditional"):
        dcgan_sampling.generate(run4[0], 2, label=1)
    with pytest.raises(UserError, match="--num"):
        dcgan_sampling.generate(run4[0], 0)
    with pytest.raises(UserError, match="no dcgan checkpoint"):
        dcgan_sampling.generate(str(tmp_path), 2)


@pytest.mark.parametrize("name", ["mnist", "flowers64"])
@pytest.mark.parametrize("preset", ["", "tiny"])
def test_configs_load_and_build(name, preset):
    c = importlib.import_module(f"configs.dcgan.{name}").get_config(preset)
    assert c.is_locked and c.model.name == "dcgan" and (c.optim.g_lr, c.optim.b1) == (2e-4, 0.5)
    with pytest.raises(AttributeError):
        c.model.z_dimm = 3
    g, d = dcgan_model.from_config(c), dcgan_model.discriminator_from_config(c)
    s, ch = c.data.image_size, c.data.channels
    if not preset:
        assert (s, ch) == {"mnist": (32, 1), "flowers64": (64, 3)}[name]
    z = jax.ShapeDtypeStruct((2, c.model.z_dim), jnp.float32)
    x = jax.eval_shape(lambda z: g.apply(g.init(jax.random.PRNGKey(0), z), z), z)
    assert x.shape == (2, s, s, ch)
    assert jax.eval_shape(lambda x: d.apply(d.init(jax.random.PRNGKey(0), x), x), x).shape == (2,)
