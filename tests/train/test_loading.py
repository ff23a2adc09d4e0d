"""Loading a run folder for inference: weights only (the EMA copy when the run keeps one), the model
rebuilt from config.json, run folders of older code still load."""
import json
import os

import jax
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.train import loading, runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.trainers.vqgan import VQGANSetup


def test_vqgan_loader_restores_the_ema_weights_and_statistics_only(run_dir):
    vq = loading.load_vqgan(run_dir)
    assert set(vq.variables) == {"params", "vq_stats"} and vq.step == 4
    config = runs.read_config(run_dir, "vqgan")
    full = Checkpointer(runs.checkpoint_dir(run_dir, "vqgan"), async_save=False).restore(
        VQGANSetup.shared(config).abstract_state())
    for a, b in zip(jax.tree.leaves(vq.variables["params"]), jax.tree.leaves(full.ema_params)):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(full.ema_params),
                                                       jax.tree.leaves(full.g_params)))  # EMA != raw here
    for a, b in zip(jax.tree.leaves(vq.variables["vq_stats"]), jax.tree.leaves(full.vq_stats)):
        np.testing.assert_array_equal(a, b)


def test_prior_loader_gives_params_tokens_and_layout(run_dir):
    prior = loading.load_prior(run_dir)
    assert set(prior.variables) == {"params"} and prior.step == 4
    assert prior.tokens.num_codes == 32 and prior.tokens.num_classes == 6 and prior.layout["grid"] == [8, 8]
    ids = np.zeros((1, prior.layout["seq_len"]), np.int32)
    logits = prior.run("__call__", ids)
    assert logits.shape == (1, prior.layout["seq_len"], prior.tokens.vocab_size)


def test_an_older_config_json_without_new_keys_still_loads(run_dir, tmp_path):
    """Run folders written before `ops` and `model.name` existed: the defaults fill in."""
    import shutil
    work = str(tmp_path / "old")
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(work, "vqgan"))
    path = runs.config_path(work, "vqgan")
    cfg = json.load(open(path))
    del cfg["ops"], cfg["model"]["name"]
    json.dump(cfg, open(path, "w"))
    vq = loading.load_vqgan(work)
    assert vq.config.ops == "auto" and vq.config.model.name == "vqgan"
    runs.write_config(work, "vqgan", vq.config)        # resuming it is not "a different network"


def test_missing_parts_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="no vqgan checkpoint.*train stage 1 first"):
        loading.load_vqgan(str(tmp_path))
    with pytest.raises(UserError, match="no prior in"):
        loading.load_prior(str(tmp_path))
