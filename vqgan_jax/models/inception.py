"""Inception-v3 as the FID network of pytorch-fid (the TF 2015-12-05 graph), in plain Flax.

The module is pytorch-fid's `fid_inception_v3()` in NHWC: torchvision's Inception-v3 with the TF graph's
quirks (`FIDInceptionA/C/E_1` average-pool without counting padding, `FIDInceptionE_2` max-pools) and a
1008-way `fc`. Every submodule carries pytorch-fid's name (`Conv2d_1a_3x3`, `Mixed_5b/branch1x1`, ...), with
`conv` and `bn` inside each BasicConv2d, so the state dict maps onto it by rule:
    X.conv.weight (O, I, kh, kw)  -> params/X/conv/kernel (kh, kw, I, O)
    X.bn.weight / X.bn.bias       -> params/X/bn/scale / params/X/bn/bias
    X.bn.running_mean / _var      -> batch_stats/X/bn/mean / batch_stats/X/bn/var
    fc.weight (1008, 2048)        -> params/fc/kernel (2048, 1008);   fc.bias -> params/fc/bias
The weights (an `.npz` of exactly these '/'-joined keys, float32) are read and made by
`vqgan_jax.interop.inception_weights` (`python -m vqgan_jax.inception download --out FILE.npz`).
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


class BasicConv2d(nn.Module):
    """Conv without bias, inference BatchNorm (eps 1e-3, running statistics), ReLU.

    Attributes:
      features: output channels.
      kernel_size: (kh, kw).
      strides: stride of both spatial axes.
      padding: symmetric zero padding (ph, pw), as torch's `padding=`.
      dtype: computation dtype. precision: conv precision (HIGHEST keeps TF32 off on GPUs).
    """
    features: int
    kernel_size: tuple[int, int] = (1, 1)
    strides: int = 1
    padding: tuple[int, int] = (0, 0)
    dtype: Any = jnp.float32
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        """x: (N, H, W, C). Returns (N, H', W', features) in dtype."""
        (ph, pw), s = self.padding, self.strides
        x = nn.Conv(self.features, self.kernel_size, strides=(s, s), padding=((ph, ph), (pw, pw)),
                    use_bias=False, dtype=self.dtype, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, dtype=self.dtype, name="bn")(x)
        return nn.relu(x)


def _avg_pool_3x3(x):
    """3x3 stride-1 average pool, padding 1, averaging only the real pixels (count_include_pad=False)."""
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_3x3_s2(x):
    """3x3 stride-2 max pool without padding: (N, H, W, C) -> (N, (H-3)//2+1, ...)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2))


class _Block(nn.Module):
    """Base of the Mixed blocks: holds dtype/precision and builds BasicConv2d's with them."""
    dtype: Any = jnp.float32
    precision: Any = jax.lax.Precision.HIGHEST

    def conv(self, features, name, kernel=(1, 1), strides=1, padding=(0, 0)):
        return BasicConv2d(features, kernel, strides, padding, self.dtype, self.precision, name=name)


class FIDInceptionA(_Block):
    """Mixed_5b/c/d (35x35): 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1; 224 + pool_features channels."""
    pool_features: int = 32

    @nn.compact
    def __call__(self, x):
        b1 = self.conv(64, "branch1x1")(x)
        b5 = self.conv(48, "branch5x5_1")(x)
        b5 = self.conv(64, "branch5x5_2", (5, 5), padding=(2, 2))(b5)
        b3 = self.conv(64, "branch3x3dbl_1")(x)
        b3 = self.conv(96, "branch3x3dbl_2", (3, 3), padding=(1, 1))(b3)
        b3 = self.conv(96, "branch3x3dbl_3", (3, 3), padding=(1, 1))(b3)
        bp = self.conv(self.pool_features, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(_Block):
    """Mixed_6a (35 -> 17): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2; 384 + 96 + C_in channels."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv(384, "branch3x3", (3, 3), strides=2)(x)
        bd = self.conv(64, "branch3x3dbl_1")(x)
        bd = self.conv(96, "branch3x3dbl_2", (3, 3), padding=(1, 1))(bd)
        bd = self.conv(96, "branch3x3dbl_3", (3, 3), strides=2)(bd)
        return jnp.concatenate([b3, bd, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionC(_Block):
    """Mixed_6b..e (17x17) with factorised 7x7 convs of `channels_7x7` channels; 4 x 192 = 768 channels."""
    channels_7x7: int = 128

    @nn.compact
    def __call__(self, x):
        c7, row, col = self.channels_7x7, dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        b1 = self.conv(192, "branch1x1")(x)
        b7 = self.conv(c7, "branch7x7_1")(x)
        b7 = self.conv(c7, "branch7x7_2", **row)(b7)
        b7 = self.conv(192, "branch7x7_3", **col)(b7)
        bd = self.conv(c7, "branch7x7dbl_1")(x)
        bd = self.conv(c7, "branch7x7dbl_2", **col)(bd)
        bd = self.conv(c7, "branch7x7dbl_3", **row)(bd)
        bd = self.conv(c7, "branch7x7dbl_4", **col)(bd)
        bd = self.conv(192, "branch7x7dbl_5", **row)(bd)
        bp = self.conv(192, "branch_pool")(_avg_pool_3x3(x))
        return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(_Block):
    """Mixed_7a (17 -> 8): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2; 320 + 192 + C_in channels."""

    @nn.compact
    def __call__(self, x):
        b3 = self.conv(192, "branch3x3_1")(x)
        b3 = self.conv(320, "branch3x3_2", (3, 3), strides=2)(b3)
        b7 = self.conv(192, "branch7x7x3_1")(x)
        b7 = self.conv(192, "branch7x7x3_2", (1, 7), padding=(0, 3))(b7)
        b7 = self.conv(192, "branch7x7x3_3", (7, 1), padding=(3, 0))(b7)
        b7 = self.conv(192, "branch7x7x3_4", (3, 3), strides=2)(b7)
        return jnp.concatenate([b3, b7, _max_pool_3x3_s2(x)], axis=-1)


class FIDInceptionE(_Block):
    """Mixed_7b (`pool="avg"`, pytorch-fid's FIDInceptionE_1) and Mixed_7c (`pool="max"`, FIDInceptionE_2).

    The TF graph's Mixed_7c max-pools its pool branch where torchvision average-pools. 2048 channels out.
    """
    pool: str = "avg"

    @nn.compact
    def __call__(self, x):
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        b1 = self.conv(320, "branch1x1")(x)
        b3 = self.conv(384, "branch3x3_1")(x)
        b3 = jnp.concatenate([self.conv(384, "branch3x3_2a", **row)(b3),
                              self.conv(384, "branch3x3_2b", **col)(b3)], axis=-1)
        bd = self.conv(448, "branch3x3dbl_1")(x)
        bd = self.conv(384, "branch3x3dbl_2", (3, 3), padding=(1, 1))(bd)
        bd = jnp.concatenate([self.conv(384, "branch3x3dbl_3a", **row)(bd),
                              self.conv(384, "branch3x3dbl_3b", **col)(bd)], axis=-1)
        if self.pool == "avg":
            pooled = _avg_pool_3x3(x)
        else:
            pooled = nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
        bp = self.conv(192, "branch_pool")(pooled)
        return jnp.concatenate([b1, b3, bd, bp], axis=-1)  # 320 + 768 + 768 + 192


class Logits(nn.Module):
    """The `fc` layer: kernel (2048, num_classes) and bias; the bias is added only when add_bias."""
    num_classes: int = 1008
    add_bias: bool = False
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, x):
        """x: float32 (N, D). Returns float32 (N, num_classes)."""
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.num_classes))
        bias = self.param("bias", nn.initializers.zeros, (self.num_classes,))
        y = jnp.dot(x, kernel, precision=self.precision)
        return y + bias if self.add_bias else y


class Inception(nn.Module):
    """pytorch-fid's Inception-v3 (inference only). Use `load_inception_params()` as its variables.

    Attributes:
      num_classes: width of `fc` (1008 in the TF graph: 1000 ImageNet classes + 8 unused).
      logits_bias: add fc.bias to the logits. False (default) gives `pool3 @ W`, the logits of the original
        Inception Score code (openai/improved-gan) and torch-fidelity's `logits_unbiased`.
      dtype: computation dtype of the convs; pool3 and logits are float32 either way.
      precision: conv/matmul precision; HIGHEST keeps GPUs off TF32 so features match float32 references.
    """
    num_classes: int = 1008
    logits_bias: bool = False
    dtype: Any = jnp.float32
    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images):
        """images: float (N, 299, 299, 3) RGB in [0, 255] (see `fid.clean_resize`).

        Returns (pool3 float32 (N, 2048), logits float32 (N, num_classes)).
        """
        # pytorch-fid's normalize_input on x/255: 2x - 1 maps [0, 255] to [-1, 1].
        x = (images.astype(jnp.float32) / 255.0 * 2.0 - 1.0).astype(self.dtype)
        kw = dict(dtype=self.dtype, precision=self.precision)
        x = BasicConv2d(32, (3, 3), strides=2, name="Conv2d_1a_3x3", **kw)(x)        # (N, 149, 149, 32)
        x = BasicConv2d(32, (3, 3), name="Conv2d_2a_3x3", **kw)(x)                   # (N, 147, 147, 32)
        x = BasicConv2d(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3", **kw)(x)   # (N, 147, 147, 64)
        x = _max_pool_3x3_s2(x)                                                      # (N, 73, 73, 64)
        x = BasicConv2d(80, (1, 1), name="Conv2d_3b_1x1", **kw)(x)                   # (N, 73, 73, 80)
        x = BasicConv2d(192, (3, 3), name="Conv2d_4a_3x3", **kw)(x)                  # (N, 71, 71, 192)
        x = _max_pool_3x3_s2(x)                                                      # (N, 35, 35, 192)
        x = FIDInceptionA(pool_features=32, name="Mixed_5b", **kw)(x)                # (N, 35, 35, 256)
        x = FIDInceptionA(pool_features=64, name="Mixed_5c", **kw)(x)                # (N, 35, 35, 288)
        x = FIDInceptionA(pool_features=64, name="Mixed_5d", **kw)(x)                # (N, 35, 35, 288)
        x = InceptionB(name="Mixed_6a", **kw)(x)                                     # (N, 17, 17, 768)
        for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
            x = FIDInceptionC(channels_7x7=c7, name=name, **kw)(x)                   # (N, 17, 17, 768)
        x = InceptionD(name="Mixed_7a", **kw)(x)                                     # (N, 8, 8, 1280)
        x = FIDInceptionE(pool="avg", name="Mixed_7b", **kw)(x)                      # (N, 8, 8, 2048)
        x = FIDInceptionE(pool="max", name="Mixed_7c", **kw)(x)                      # (N, 8, 8, 2048)
        pool3 = jnp.mean(x.astype(jnp.float32), axis=(1, 2))                         # (N, 2048)
        logits = Logits(self.num_classes, self.logits_bias, self.precision, name="fc")(pool3)
        return pool3, logits
