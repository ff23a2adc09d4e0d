"""Token shards of the prior's training set."""
import numpy as np

from vqgan_jax.data import tokens as tokens_lib


def test_token_shards_round_trip(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1024, (5, 4, 4))
    labels = np.arange(5)
    path = tokens_lib.save_shard(str(tmp_path), "shard_0_00000.npz", ids, labels)
    with np.load(path) as z:
        assert z["ids"].dtype == np.uint16 and z["labels"].dtype == np.int32
        np.testing.assert_array_equal(z["ids"], ids)
        np.testing.assert_array_equal(z["labels"], labels)
