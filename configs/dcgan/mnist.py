"""DCGAN on MNIST digits at 32x32, one channel (the reference survey's DCGAN figure).

Data: TFDS `mnist` (28x28 grayscale, resized to 32x32 so the generator upsamples 4 -> 8 -> 16 -> 32).
When it is not prepared, train.py says how in one line (`tfds build mnist --data_dir=...` on a machine
with internet). No horizontal flips: a mirrored digit is not a digit.

    python train.py --config configs/dcgan/mnist.py --workdir runs/dcgan

Presets: `configs/dcgan/mnist.py:tiny` (synthetic 16x16 grayscale images; tests).
"""
from configs.dcgan import common


def get_config(arg: str = ""):
    c = common.get_dcgan_base()
    c.name = "dcgan_mnist"
    c.data.source = "tfds"
    c.data.tfds_name = "mnist"
    c.data.train_split = "train"
    c.data.eval_split = "test"
    c.data.image_size = 32
    c.data.channels = 1
    c.data.random_flip = False
    c.data.shuffle_buffer = 10000
    c.train.num_steps = 5000      # ~10.7 epochs of 60k digits at batch 128

    if arg == "tiny":
        common.apply_tiny(c)
    elif arg:
        raise ValueError(f"unknown preset {arg!r} for dcgan/mnist (known: tiny)")
    c.lock()
    return c
