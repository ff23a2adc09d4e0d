"""taming-transformers checkpoints in and out (interop.taming, interop.taming_config, python -m vqgan_jax.convert).

The fixture (tests/fixtures/taming_tiny, made by make_taming_fixture.py with taming's own VQModel) holds a
small random-weight VQModel checkpoint, its YAML and taming's outputs on four images: the converted run must
give the same reconstructions (1e-4), the same code ids (exactly) and the same discriminator logits (1e-4).
"""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

from vqgan_jax import convert
from vqgan_jax.errors import UserError
from vqgan_jax.interop import taming, taming_config, torch_ckpt
from vqgan_jax.models import patchgan
from vqgan_jax.train import loading, parallel, runs
from vqgan_jax.train.checkpoint import Checkpointer, abstract_like

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIX = os.path.join(ROOT, "tests", "fixtures", "taming_tiny")
CKPT, YAML = os.path.join(FIX, "last.ckpt"), os.path.join(FIX, "model.yaml")
BASE = os.path.join(ROOT, "configs", "base.py:tiny")


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(os.path.join(FIX, "parity.npz")))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("taming_run"))
    convert.convert_taming(CKPT, YAML, work, base_config=BASE)
    return work


def _nhwc(x):
    return jnp.asarray(np.transpose(x, (0, 2, 3, 1)))


def _disc_params(work, config):
    disc = patchgan.from_config(config)
    abstract = {"d_params": taming.abstract_params(disc, int(config.data.image_size))}
    mesh = parallel.make_mesh()
    restored = Checkpointer(runs.checkpoint_dir(work, "vqgan"), async_save=False).restore_parts(
        abstract_like(abstract, parallel.replicated(mesh)))
    return disc, restored["d_params"]


def test_converted_run_reconstructs_like_taming(converted, ref):
    vq = loading.load_vqgan(converted)
    rec, ids = vq.run("reconstruct_with_ids", _nhwc(ref["images"]))
    np.testing.assert_array_equal(np.asarray(ids), ref["ids"])
    np.testing.assert_allclose(np.transpose(np.asarray(rec), (0, 3, 1, 2)), ref["reconstructions"], atol=1e-4, rtol=0)
    assert len(np.unique(ref["ids"])) > 8  # the comparison covers many codes, not one


def test_converted_discriminator_gives_taming_logits(converted, ref):
    config = runs.read_config(converted, "vqgan")
    assert config.disc.norm == "affine" and config.disc.ndf == 16 and config.disc.n_layers == 2
    disc, d_params = _disc_params(converted, config)
    logits = disc.apply({"params": d_params}, _nhwc(ref["images"]))
    np.testing.assert_allclose(np.transpose(np.asarray(logits), (0, 3, 1, 2)), ref["disc_logits"], atol=1e-4, rtol=0)


def test_run_folder_config_comes_from_the_yaml(converted):
    cfg = runs.read_config_dict(converted, "vqgan")
    assert cfg["model"]["ch"] == 32 and cfg["model"]["ch_mult"] == [1, 1]
    assert cfg["model"]["attn_resolutions"] == [8] and cfg["model"]["z_channels"] == 8
    assert (cfg["quantizer"]["num_codes"], cfg["quantizer"]["code_dim"], cfg["quantizer"]["beta"]) == (16, 4, 0.25)
    assert cfg["data"]["image_size"] == 16 and cfg["loss"]["disc_start"] == 10001
    source = json.load(open(os.path.join(converted, "vqgan", "converted_from.json")))
    assert source["format"] == "taming" and source["global_step"] == 1234
    assert Checkpointer(runs.checkpoint_dir(converted, "vqgan"), async_save=False).all_steps() == [0]


def test_export_then_import_is_the_identity(converted, tmp_path):
    ckpt, yaml_path = str(tmp_path / "back.ckpt"), str(tmp_path / "back.yaml")
    assert convert.main(["to-taming", "--workdir", converted, "--out", ckpt]) == 0
    exported = torch_ckpt.state_dict_of(torch_ckpt.read_checkpoint(ckpt), ckpt)
    original = torch_ckpt.state_dict_of(torch_ckpt.read_checkpoint(CKPT), CKPT)
    expected_keys = {k for k in original if not k.startswith("loss.perceptual_loss.")}
    assert set(exported) == expected_keys
    for k, v in original.items():
        if k.startswith(taming._PARTS):  # the autoencoder comes back bit for bit (float16 -> float32 exactly)
            np.testing.assert_array_equal(exported[k], v.astype(np.float32), err_msg=k)
    assert yaml.safe_load(open(yaml_path))["model"]["params"]["ddconfig"] == \
        yaml.safe_load(open(YAML))["model"]["params"]["ddconfig"]

    again = str(tmp_path / "again")
    convert.convert_taming(ckpt, yaml_path, again, base_config=BASE)
    a, b = loading.load_vqgan(converted), loading.load_vqgan(again)
    jax.tree.map(np.testing.assert_array_equal, a.variables["params"], b.variables["params"])
    config = runs.read_config(converted, "vqgan")
    (_, da), (_, db) = _disc_params(converted, config), _disc_params(again, config)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=0), da, db)


def test_legacy_beta_and_remap_mapping():
    data = yaml.safe_load(open(YAML))
    data["model"]["params"]["remap"] = "used.npy"
    sections, info = taming_config.sections_from_yaml(data, "m.yaml", legacy_beta=True)
    # taming: ||sg(zq) - z||^2 + 0.25 ||zq - sg(z)||^2 == 0.25 * (codebook + 4 * commit)
    assert sections["quantizer"]["beta"] == 4.0 and sections["loss"]["codebook_weight"] == 0.25
    assert any("remap" in n for n in info["notes"])
    sections, _ = taming_config.sections_from_yaml(data, "m.yaml")
    assert sections["quantizer"]["beta"] == 0.25 and sections["loss"]["codebook_weight"] == 1.0


def _bad_yaml(tmp_path, edit):
    data = yaml.safe_load(open(YAML))
    edit(data["model"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _set(d, key, value):
    d[key] = value


BAD_INPUTS = {
    "shapes disagree with the YAML": (lambda m: _set(m["params"]["ddconfig"], "z_channels", 12), None,
                                      "weight has shape"),
    "extra blocks in the checkpoint": (lambda m: _set(m["params"]["ddconfig"], "attn_resolutions", []), None,
                                       "no place for"),
    "a Gumbel model": (lambda m: _set(m, "target", "taming.models.vqgan.GumbelVQ"), None, "Gumbel"),
    "a file that is not a checkpoint": (lambda m: None, "text", "not a PyTorch checkpoint"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_status_2(case, tmp_path, capsys):
    edit, ckpt, message = BAD_INPUTS[case]
    if ckpt == "text":
        ckpt = str(tmp_path / "last.ckpt")
        open(ckpt, "w").write("model weights go here\n")
    status = convert.main(["taming", "--ckpt", ckpt or CKPT, "--config", _bad_yaml(tmp_path, edit),
                           "--workdir", str(tmp_path / "w"), "--base_config", BASE])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not os.path.exists(tmp_path / "w" / "vqgan" / "checkpoints")


def test_command_line_exit_status(tmp_path):
    bad = _bad_yaml(tmp_path, lambda m: _set(m, "target", "taming.models.vqgan.GumbelVQ"))
    r = subprocess.run([sys.executable, "-m", "vqgan_jax.convert", "taming", "--ckpt", CKPT, "--config", bad,
                        "--workdir", str(tmp_path / "w")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Gumbel" in r.stderr, r.stderr


def test_refuses_to_overwrite_a_run(converted, capsys):
    with pytest.raises(UserError, match="already holds a checkpoint"):
        convert.convert_taming(CKPT, YAML, converted, base_config=BASE)


def _conv(x, w, b, stride):
    """taming's Conv2d(k=4, padding=1) on NHWC x with torch weights w (O, I, 4, 4)."""
    y = jax.lax.conv_general_dilated(x, jnp.asarray(w.transpose(2, 3, 1, 0)), (stride, stride), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest")
    return y + (b if b is not None else 0.0)


def test_actnorm_discriminator_folds_exactly():
    rng = np.random.default_rng(0)
    ndf = 8
    sd = {"loss.discriminator.main.0.weight": rng.normal(size=(ndf, 3, 4, 4)).astype(np.float32) * 0.2,
          "loss.discriminator.main.0.bias": rng.normal(size=(ndf,)).astype(np.float32),
          "loss.discriminator.main.2.weight": rng.normal(size=(2 * ndf, ndf, 4, 4)).astype(np.float32) * 0.2,
          "loss.discriminator.main.2.bias": rng.normal(size=(2 * ndf,)).astype(np.float32),
          "loss.discriminator.main.3.loc": rng.normal(size=(1, 2 * ndf, 1, 1)).astype(np.float32),
          "loss.discriminator.main.3.scale": rng.uniform(0.5, 2, size=(1, 2 * ndf, 1, 1)).astype(np.float32),
          "loss.discriminator.main.3.initialized": np.array(1, np.uint8),
          "loss.discriminator.main.5.weight": rng.normal(size=(1, 2 * ndf, 4, 4)).astype(np.float32) * 0.2,
          "loss.discriminator.main.5.bias": rng.normal(size=(1,)).astype(np.float32)}
    disc = patchgan.PatchDiscriminator(ndf=ndf, n_layers=1, norm="affine")
    params = taming.disc_params(sd, taming.abstract_params(disc, 16), 1, "x.ckpt")
    x = jnp.asarray(rng.uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32))
    g = lambda k: sd[f"loss.discriminator.main.{k}"]  # noqa: E731
    h = jax.nn.leaky_relu(_conv(x, g("0.weight"), g("0.bias"), 2), 0.2)
    h = _conv(h, g("2.weight"), g("2.bias"), 1)
    h = jax.nn.leaky_relu(g("3.scale").reshape(-1) * (h + g("3.loc").reshape(-1)), 0.2)   # ActNorm
    want = _conv(h, g("5.weight"), g("5.bias"), 1)
    got = disc.apply({"params": params}, x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=0)
