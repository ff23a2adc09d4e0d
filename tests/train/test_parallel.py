"""The mesh helpers: a cheaply compiled initialiser gives the values of an optimised one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vqgan_jax import backends
from vqgan_jax.errors import UserError
from vqgan_jax.models.patchgan import PatchDiscriminator
from vqgan_jax.train import parallel


def test_init_without_backend_optimisation_equals_an_optimised_init():
    d = PatchDiscriminator(ndf=8, n_layers=2)
    x = jnp.zeros((1, 16, 16, 3))
    fast = parallel.run_once_jitted(d.init, jax.random.key(5), x,
                                    compiler_options=backends.init_compiler_options("xla_cpu"))
    slow = jax.jit(d.init)(jax.random.key(5), x)
    jax.tree_util.tree_map(np.testing.assert_array_equal, fast, slow)
    assert float(jnp.std(fast["params"]["conv_1"]["kernel"])) > 0


def test_batch_size_must_divide_over_the_devices():
    mesh = parallel.make_mesh()
    assert mesh.devices.size == 8 and mesh.axis_names == ("data",)
    parallel.check_batch_size(16, mesh)
    with pytest.raises(UserError, match="multiple of 8"):
        parallel.check_batch_size(12, mesh)


def test_global_batch_is_sharded_on_the_data_axis():
    mesh = parallel.make_mesh()
    batch = parallel.global_batch({"image": np.arange(16 * 3, dtype=np.float32).reshape(16, 3)}, mesh)
    assert batch["image"].sharding.spec == parallel.batch_sharding(mesh).spec
    assert len(batch["image"].addressable_shards) == 8
    np.testing.assert_array_equal(np.asarray(batch["image"]), np.arange(48).reshape(16, 3))
