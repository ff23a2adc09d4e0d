"""train.py and sample.py on a DCGAN run folder (configs/dcgan/flowers64.py:tiny), end to end, and their
one-line errors."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli(script, *args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = str(tmp_path_factory.mktemp("dcgan_cli"))
    r = cli("train.py", "--config", "configs/dcgan/flowers64.py:tiny", "--workdir", work,
            "--config.data.source=synthetic")
    assert r.returncode == 0, r.stderr[-3000:]
    return work, r


@pytest.mark.slow  # the same run folder and sampling, in process: tests/trainers/test_dcgan.py (fast tier)
def test_train_then_sample(trained, tmp_path):
    work, r = trained
    assert "step 4/4" in r.stdout and "final_samples:" in r.stdout
    assert os.path.isfile(os.path.join(work, "dcgan", "images", "evolution.png"))
    out = str(tmp_path / "samples")
    s = cli("sample.py", "--workdir", work, "--num", "6", "--out", out, "--seed", "0", "--batch_size", "4")
    assert s.returncode == 0, s.stderr[-3000:]
    assert "wrote 6 images and grid.png" in s.stdout and os.path.isfile(os.path.join(out, "grid.png"))
    written = np.stack([np.asarray(Image.open(os.path.join(out, f"sample_{i:05d}.png"))) for i in range(6)])
    from vqgan_jax.sampling import dcgan
    np.testing.assert_array_equal(written, dcgan.generate(work, 6, seed=0, batch_size=2))  # same seed, same images


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.slow
def test_bad_input_is_one_line(tmp_path):
    os.makedirs(tmp_path / "dcgan")
    one_line_error(cli("sample.py", "--workdir", str(tmp_path), "--out", str(tmp_path / "s")),
                   "no dcgan checkpoint")
    one_line_error(cli("train.py", "--config", "configs/dcgan/mnist.py", "--workdir", str(tmp_path / "w"),
                       f"--config.data.dir={tmp_path}"), "tfds build mnist")


def test_bad_image_size_is_a_user_error(tmp_path):
    from configs.dcgan import mnist
    from vqgan_jax import trainers
    from vqgan_jax.errors import UserError
    c = mnist.get_config("tiny")
    c.unlock()
    c.data.image_size = 24
    with pytest.raises(UserError, match="power of two"):
        trainers.train("dcgan", c, str(tmp_path))
