"""The backend seam: which layers `ops` picks, and that both layer sets build the same parameter tree and
compute the same numbers, so a checkpoint trained with the XLA:CPU layers runs in the plain model."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from vqgan_jax import backends, trainers
from vqgan_jax.backends import xla_cpu
from vqgan_jax.errors import UserError
from vqgan_jax.models import patchgan, vqgan
from vqgan_jax.train import loading, parallel
from tests import jit


class _Device:
    def __init__(self, platform):
        self.platform = platform


def test_resolve_picks_from_the_devices_or_the_config():
    cpus, gpus = [_Device("cpu")] * 2, [_Device("gpu")] * 2
    assert backends.resolve("auto", cpus) == "xla_cpu"
    assert backends.resolve("auto", gpus) == "plain"
    assert backends.resolve("auto", [_Device("cpu"), _Device("gpu")]) == "plain"
    assert backends.resolve("plain", cpus) == "plain" and backends.resolve("xla_cpu", gpus) == "xla_cpu"
    assert backends.resolve("auto", jax.devices()) == "xla_cpu"   # the test devices: 8 CPUs
    with pytest.raises(UserError, match="ops='cuda'"):
        backends.resolve("cuda", cpus)
    assert backends.vqgan_layers("plain") == {} and backends.gpt2_layers("plain") == {}
    assert backends.decode_chunk_len("plain") == 0 and backends.decode_chunk_len("xla_cpu") == 32
    assert backends.init_compiler_options("plain") is None


def test_rules_switch_off_by_name():
    assert set(backends.gpt2_layers("xla_cpu")) == {"dense", "block", "dropout_layer", "attention_fn"}
    assert "dense" not in backends.gpt2_layers("xla_cpu", disable=["dense"])
    layers = backends.vqgan_layers("xla_cpu", disable=["group_norm", "winograd_3x3"])
    assert "norm" not in layers and layers["conv"].keywords["winograd_3x3"] is False
    assert layers["conv"].keywords["bias_sum"] is True
    # bias gradients in the batch-first order only when the training mesh splits the batch over devices
    from vqgan_jax.train import parallel
    assert layers["conv"].keywords["sharded_batch"] is False
    eight, one = parallel.make_mesh(), parallel.make_mesh(jax.devices()[:1])
    assert backends.vqgan_layers("xla_cpu", mesh=eight)["upsample"].keywords["sharded_batch"] is True
    assert backends.vqgan_layers("xla_cpu", mesh=one)["conv"].keywords["sharded_batch"] is False
    assert backends.gpt2_layers("xla_cpu", mesh=eight)["dense"].keywords["sharded_batch"] is True
    with pytest.raises(ValueError, match="unknown XLA:CPU rules"):
        backends.vqgan_layers("xla_cpu", disable=["nope"])
    assert set(xla_cpu.VQGAN_RULES) and set(xla_cpu.GPT2_RULES)


def _wide_config():
    """A VQGAN wide enough for every XLA:CPU rule (Winograd needs >= 128 channels on one side)."""
    c = demo.get_config("tiny")
    c.model.ch, c.model.ch_mult, c.model.attn_resolutions = 64, (1, 2), (8,)
    c.model.z_channels, c.quantizer.code_dim, c.disc.ndf = 8, 8, 8
    return c


def test_both_layer_sets_build_one_parameter_tree_and_compute_the_same():
    c = _wide_config()
    plain, cpu = vqgan.from_config(c), vqgan.from_config(c, **backends.vqgan_layers("xla_cpu"))
    # The same draw as eager `jax.random.uniform`, compiled as an init is (eager, its RNG kernel takes seconds).
    x = parallel.run_once_jitted(lambda key: jax.random.uniform(key, (2, 16, 16, 3), minval=-1, maxval=1),
                                 jax.random.key(0), compiler_options=backends.init_compiler_options("xla_cpu"))
    init = lambda m: jit.init(m, {"params": jax.random.key(1)}, x, train=False)  # noqa: E731
    v_plain, v_cpu = init(plain), init(cpu)
    assert jax.tree.structure(v_plain) == jax.tree.structure(v_cpu)
    for a, b in zip(jax.tree.leaves(v_plain), jax.tree.leaves(v_cpu)):
        np.testing.assert_array_equal(a, b)
    fwd = lambda m: jax.jit(lambda v, x: m.apply(v, x, train=False))(v_plain, x)  # noqa: E731
    (y_plain, aux_plain), (y_cpu, aux_cpu) = fwd(plain), fwd(cpu)
    np.testing.assert_allclose(y_cpu, y_plain, atol=2e-5 * float(np.abs(np.asarray(y_plain)).max()))
    np.testing.assert_array_equal(aux_cpu["indices"], aux_plain["indices"])
    d_plain, d_cpu = patchgan.from_config(c), patchgan.from_config(c, **backends.vqgan_layers("xla_cpu"))
    p = jit.init(d_plain, jax.random.key(2), x)
    np.testing.assert_allclose(jit.run(d_cpu, p, x), jit.run(d_plain, p, x), atol=1e-5)


@pytest.mark.slow
def test_a_run_trained_with_the_cpu_layers_loads_into_the_plain_model(tmp_path):
    """The checkpoint moves between the layer sets: same tree, same reconstructions (EMA weights)."""
    c = _wide_config()
    c.ops, c.train.num_steps, c.train.image_every, c.train.eval_every = "xla_cpu", 2, 0, 0
    trainers.train("vqgan", c, str(tmp_path))
    cpu = loading.load_vqgan(str(tmp_path))
    plain = loading.load_vqgan(str(tmp_path), ops="plain")
    assert (cpu.ops, plain.ops) == ("xla_cpu", "plain")
    x = jax.random.uniform(jax.random.key(3), (8, 16, 16, 3), minval=-1, maxval=1)
    y_cpu, ids_cpu = cpu.run("reconstruct_with_ids", x)
    y_plain, ids_plain = plain.run("reconstruct_with_ids", x)
    np.testing.assert_allclose(y_cpu, y_plain, atol=2e-5 * float(jnp.abs(y_plain).max()))
    np.testing.assert_array_equal(ids_cpu, ids_plain)
