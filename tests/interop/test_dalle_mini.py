"""dalle-mini's Flax VQGAN folders (config.json + flax_model.msgpack) -> run folders (interop.dalle_mini).

The folder is made from the taming fixture's weights in dalle-mini's parameter layout, so the converted run
must reproduce taming's reconstructions and ids on the fixture's images.
"""
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from vqgan_jax import convert
from vqgan_jax.errors import UserError
from vqgan_jax.interop import dalle_mini, taming, taming_config, torch_ckpt
from vqgan_jax.models import vqgan
from vqgan_jax.train import loading, runs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "taming_tiny")
BASE = os.path.join(ROOT, "configs", "base.py:tiny")


def _taming_params():
    sections, _ = taming_config.sections_from_yaml(taming_config.read_yaml(os.path.join(FIX, "model.yaml")), "y")
    config = convert.load_config_file(BASE)
    convert._apply(config, sections)
    sd = torch_ckpt.state_dict_of(torch_ckpt.read_checkpoint(os.path.join(FIX, "last.ckpt")), "c")
    return taming.vqgan_params(sd, taming.abstract_params(vqgan.from_config(config), 16), "c"), config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    params, config = _taming_params()
    path = str(tmp_path_factory.mktemp("dalle") / "vqgan_tiny")
    dalle_mini.write_model_dir(path, params, config)
    return path


def test_layout_names():
    assert dalle_mini.dalle_path(("encoder", "down_1_attn_0", "q", "kernel")) == ("encoder", "down_1", "attn_0", "q",
                                                                                 "kernel")
    assert dalle_mini.dalle_path(("decoder", "up_1_upsample", "conv", "bias")) == ("decoder", "up_1", "upsample",
                                                                                  "conv", "bias")
    assert dalle_mini.dalle_path(("decoder", "mid_block_1", "norm1", "scale")) == ("decoder", "mid", "block_1",
                                                                                  "norm1", "scale")
    assert dalle_mini.dalle_path(("quantize", "codebook")) == ("quantize", "embedding", "embedding")


def test_converted_dalle_mini_model_reconstructs_like_taming(model_dir, tmp_path, capsys):
    work = str(tmp_path / "run")
    assert convert.main(["dalle-mini", "--model_dir", model_dir, "--workdir", work, "--base_config", BASE]) == 0
    cfg = runs.read_config_dict(work, "vqgan")
    assert cfg["model"]["ch_mult"] == [1, 1] and cfg["quantizer"]["num_codes"] == 16 and cfg["data"]["image_size"] == 16
    ref = np.load(os.path.join(FIX, "parity.npz"))
    vq = loading.load_vqgan(work)
    rec, ids = vq.run("reconstruct_with_ids", jnp.asarray(ref["images"].transpose(0, 2, 3, 1)))
    np.testing.assert_array_equal(np.asarray(ids), ref["ids"])
    np.testing.assert_allclose(np.asarray(rec).transpose(0, 3, 1, 2), ref["reconstructions"], atol=1e-4, rtol=0)


def _rewrite(model_dir, tmp_path, edit):
    tree = serialization.msgpack_restore(open(os.path.join(model_dir, dalle_mini.WEIGHTS_FILE), "rb").read())
    edit(tree)
    out = tmp_path / "edited"
    out.mkdir()
    (out / dalle_mini.CONFIG_FILE).write_text(open(os.path.join(model_dir, dalle_mini.CONFIG_FILE)).read())
    (out / dalle_mini.WEIGHTS_FILE).write_bytes(serialization.msgpack_serialize(tree))
    return str(out)


def test_norms_stored_as_4d_are_accepted_and_missing_weights_refused(model_dir, tmp_path):
    params, config = _taming_params()
    abstract = taming.abstract_params(vqgan.from_config(config), 16)

    def four_d(tree):
        n = tree["encoder"]["norm_out"]
        n["scale"] = n["scale"].reshape(1, 1, 1, -1)
    got = dalle_mini.vqgan_params(_rewrite(model_dir, tmp_path, four_d), abstract)
    np.testing.assert_array_equal(got["encoder"]["norm_out"]["scale"], params["encoder"]["norm_out"]["scale"])

    missing = tmp_path / "m"
    missing.mkdir()
    d = _rewrite(model_dir, missing, lambda t: t["decoder"].pop("conv_out"))
    with pytest.raises(UserError, match="decoder/conv_out"):
        dalle_mini.vqgan_params(d, abstract)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(UserError, match="config.json not found"):
        dalle_mini.sections_from_config(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"ch": 32}))
    with pytest.raises(UserError, match="not a VQGANConfig"):
        dalle_mini.sections_from_config(str(tmp_path))
    (tmp_path / "flax_model.msgpack").write_bytes(b"\xc1 not msgpack")
    with pytest.raises(UserError, match="msgpack"):
        dalle_mini.vqgan_params(str(tmp_path), {})
