"""DCGAN on 64x64 flower photos (Radford et al.'s 64x64 architecture: ngf = ndf = 64, z 100).

Default data: an image folder; point it at the photos with
`--config.data.dir=../shared/data/flowers64` (TFDS `oxford_flowers102` works too with
`--config.data.source=tfds`).

    python train.py --config configs/dcgan/flowers64.py --workdir runs/dcgan64 \
        --config.data.source=folder --config.data.dir=../shared/data/flowers64

Presets: `configs/dcgan/flowers64.py:tiny` (synthetic 16x16 images; tests).
"""
from configs.dcgan import common


def get_config(arg: str = ""):
    c = common.get_dcgan_base()
    c.name = "dcgan_flowers64"
    c.data.source = "folder"
    c.data.tfds_name = "oxford_flowers102"
    c.data.image_size = 64
    c.data.channels = 3
    c.train.batch_size = 64       # a few thousand photos: smaller batches give more updates per epoch
    c.train.num_steps = 10000

    if arg == "tiny":
        common.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for dcgan/flowers64 (known: tiny)")
    c.lock()
    return c
