"""The training loop's guard against a non-finite state: it counts every NaN/inf, in any float dtype."""
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax.train.loop import _nonfinite_count


@pytest.mark.parametrize("chunk", [1 << 24, 5, 1])   # one run of leaves; several; one leaf per run
def test_nonfinite_count_counts_by_hand(chunk):
    a = np.ones((3, 4), np.float32)
    a[0, 1], a[2, 3] = np.nan, np.inf
    b = jnp.asarray([1.0, -np.inf, 2.0], jnp.bfloat16)
    tree = {"a": a, "b": b, "steps": np.arange(5, dtype=np.int32), "ok": np.zeros((7,), np.float32),
            "big": jnp.asarray([3e38, -3e38], jnp.float32)}   # finite at the edge of float32: not counted
    assert int(_nonfinite_count(tree, chunk=chunk)) == 3
    assert int(_nonfinite_count({"ok": np.zeros((2,), np.float32)}, chunk=chunk)) == 0
    assert int(_nonfinite_count({"only_ints": np.arange(3)}, chunk=chunk)) == 0
