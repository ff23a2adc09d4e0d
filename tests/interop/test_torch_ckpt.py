"""interop.torch_ckpt: torch zip checkpoints read without torch or pickled code, and written torch-loadable."""
import collections
import os
import zipfile

import ml_dtypes
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.interop import torch_ckpt

FIXTURE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "taming_tiny", "last.ckpt")


def test_reads_a_lightning_checkpoint_written_by_torch():
    obj = torch_ckpt.read_checkpoint(FIXTURE)
    assert obj["global_step"] == 1234 and obj["pytorch-lightning_version"] == "1.0.8"
    sd = torch_ckpt.state_dict_of(obj, FIXTURE)
    assert sd["quantize.embedding.weight"].shape == (16, 4) and sd["quantize.embedding.weight"].dtype == np.float16
    assert sd["encoder.conv_in.weight"].shape == (32, 3, 3, 3)
    assert sd["loss.discriminator.main.3.num_batches_tracked"].dtype == np.int64
    assert int(sd["loss.discriminator.main.3.num_batches_tracked"]) == 7
    # The callbacks dict is keyed by a pytorch_lightning class: kept as an inert record, never imported.
    (key, value), = obj["callbacks"].items()
    assert "ModelCheckpoint" in repr(key) and value["best_model_path"] == "logs/last.ckpt"
    assert float(value["best_model_score"]) == 0.5


def _zip_with_pickle(path, payload: bytes):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    # pickle.loads of this would call os.system("touch ...").
    payload = b"cos\nsystem\n(X" + len(f"touch {marker}").to_bytes(4, "little") + f"touch {marker}".encode() + b"tR."
    path = tmp_path / "evil.ckpt"
    _zip_with_pickle(path, b"\x80\x02" + payload)
    obj = torch_ckpt.read_checkpoint(str(path))
    assert isinstance(obj, torch_ckpt.Opaque) and obj.name == "os.system" and obj.args == (f"touch {marker}",)
    assert not marker.exists()
    with pytest.raises(UserError, match="no state_dict"):
        torch_ckpt.state_dict_of(obj, str(path))


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        torch_ckpt.read_checkpoint(str(text))
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(UserError, match="no <name>/data.pkl"):
        torch_ckpt.read_checkpoint(str(other_zip))
    with pytest.raises(UserError, match="not found"):
        torch_ckpt.read_checkpoint(str(tmp_path / "missing.ckpt"))


def _example():
    rng = np.random.default_rng(0)
    return {"epoch": 0, "global_step": 2 ** 40, "lr": 1.5e-4, "name": "vq ü", "flag": True, "none": None,
            "shape": (1, 2), "list": [1, "a"],
            "state_dict": collections.OrderedDict([
                ("w", rng.normal(size=(4, 3, 3, 3)).astype(np.float32)),
                ("t", rng.normal(size=(5, 6)).astype(np.float32).T),        # not contiguous
                ("h", rng.normal(size=(7,)).astype(np.float16)),
                ("b", rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16)),
                ("n", np.array(3, np.int64)), ("m", np.array([True, False])), ("e", np.zeros((0, 3), np.float32)),
            ])}


def test_written_checkpoints_read_back_identically(tmp_path):
    obj = _example()
    path = str(tmp_path / "x.ckpt")
    torch_ckpt.write_checkpoint(path, obj)
    back = torch_ckpt.read_checkpoint(path)
    assert isinstance(back["state_dict"], collections.OrderedDict)
    assert list(back["state_dict"]) == list(obj["state_dict"])
    for k, v in obj["state_dict"].items():
        assert back["state_dict"][k].dtype == v.dtype and back["state_dict"][k].shape == v.shape, k
        np.testing.assert_array_equal(back["state_dict"][k], v)
    assert {k: back[k] for k in obj if k != "state_dict"} == {k: v for k, v in obj.items() if k != "state_dict"}


def test_torch_loads_what_we_write_and_we_read_what_torch_writes(tmp_path):
    torch = pytest.importorskip("torch")
    obj = _example()
    path = str(tmp_path / "x.ckpt")
    torch_ckpt.write_checkpoint(path, obj)
    loaded = torch.load(path, weights_only=True)
    for k, v in obj["state_dict"].items():
        t = loaded["state_dict"][k]
        got = t.float().numpy() if v.dtype == ml_dtypes.bfloat16 else t.numpy()
        np.testing.assert_array_equal(got, v.astype(np.float32) if v.dtype == ml_dtypes.bfloat16 else v)
    assert loaded["global_step"] == 2 ** 40 and loaded["name"] == "vq ü"

    g = torch.Generator().manual_seed(0)
    sd = {"a": torch.randn(3, 4, generator=g), "b": torch.randn(4, 6, generator=g)[:, ::2],  # a strided view
          "c": torch.arange(5, dtype=torch.int64), "d": torch.nn.Parameter(torch.randn(2, generator=g))}
    path2 = str(tmp_path / "t.pt")
    torch.save({"state_dict": sd}, path2)
    ours = torch_ckpt.read_checkpoint(path2)["state_dict"]
    for k, v in sd.items():
        np.testing.assert_array_equal(ours[k], v.detach().numpy())


def test_buffer_overrun_is_reported(tmp_path):
    w = torch_ckpt._Writer()
    w.op(b"\x80\x02")
    w.save({"x": np.zeros(4, np.float32)})
    w.op(b".")
    path = tmp_path / "bad.ckpt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", w.out.getvalue())
        zf.writestr("archive/data/0", np.zeros(2, np.float32).tobytes())  # half the bytes
    with pytest.raises(UserError, match="damaged"):
        torch_ckpt.read_checkpoint(str(path))
