"""`sample.py --reconstruct`: originals over reconstructions of any image files."""
import numpy as np
import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.viz.reconstructions import write_reconstructions


def test_reconstruct_writes_originals_over_reconstructions(run_dir, tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, c in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        Image.new("RGB", (20, 24), c).save(folder / f"{i}.png")
    out = write_reconstructions(run_dir, str(folder), str(tmp_path / "recon.png"))
    picture = np.asarray(Image.open(out))
    assert picture.shape == (2 + 2 * 18, 2 + 3 * 18, 3)   # 2 rows x 3 columns of 16 px tiles, 2 px gaps
    np.testing.assert_array_equal(picture[2:18, 2:18], np.broadcast_to([255, 0, 0], (16, 16, 3)))
    with pytest.raises(UserError, match="cannot read image"):
        (folder / "bad.png").write_bytes(b"not an image")
        write_reconstructions(run_dir, str(folder / "bad.png"), str(tmp_path / "r2.png"))
