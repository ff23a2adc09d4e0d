"""Fine-tuning from a converted run (config.init_from): the network and weights come from the source run, the
data and schedule from the config, and the new run resumes from its own checkpoints like any other."""
import os

import jax
import numpy as np
import pytest

from configs import demo
from vqgan_jax import convert, trainers
from vqgan_jax.errors import UserError
from vqgan_jax.train import loading, runs
from vqgan_jax.train.checkpoint import Checkpointer

pytestmark = pytest.mark.slow  # whole fine-tuning runs and their resume: the slow tier (`make test-slow`, run by CI)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "taming_tiny")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("src"))
    convert.convert_taming(os.path.join(FIX, "last.ckpt"), os.path.join(FIX, "model.yaml"), work,
                           base_config=os.path.join(ROOT, "configs", "base.py:tiny"))
    return work


def _config(init_from, num_steps):
    c = demo.get_config("tiny")  # 16x16 synthetic images, like the fixture's resolution
    c.init_from = init_from
    c.train.num_steps = num_steps
    c.train.image_every = 0
    c.train.eval_every = 0
    return c


def _max_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in
               zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_fine_tune_starts_from_the_source_weights_and_resumes(source, tmp_path):
    work = str(tmp_path / "ft")
    trainers.train("vqgan", _config(source, 2), work)
    cfg = runs.read_config_dict(work, "vqgan")
    src = runs.read_config_dict(source, "vqgan")
    for section in ("model", "quantizer", "disc"):
        assert cfg[section] == src[section], section
    assert cfg["data"]["synthetic_size"] == demo.get_config("tiny").data.synthetic_size  # data stays ours
    # Two Adam steps at lr 1e-4 move each weight by at most ~2e-4; a fresh init would be O(0.1) away.
    before, after = loading.load_vqgan(source), loading.load_vqgan(work)
    assert after.step == 2
    assert 0 < _max_diff(before.variables["params"], after.variables["params"]) < 1e-3

    trainers.train("vqgan", _config(source, 4), work)                    # resume, init_from still set
    assert Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False).latest_step() == 4
    assert runs.read_config_dict(work, "vqgan")["model"] == src["model"]


def test_init_from_a_folder_without_a_vqgan_is_a_user_error(tmp_path):
    with pytest.raises(UserError):
        trainers.train("vqgan", _config(str(tmp_path / "nothing"), 2), str(tmp_path / "ft"))
