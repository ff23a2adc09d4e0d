"""Which layers compute the models: plain Flax, or a backend's layers behind one seam.

The models under `vqgan_jax.models` are plain Flax with their layer constructors as fields. A trainer
(or a loader for inference) calls `resolve(config.ops, devices)` once and passes `vqgan_layers(kind)` /
`gpt2_layers(kind)` to the model builders:

    ops = 'auto'     XLA:CPU layers when every device of the mesh is a CPU, flax's layers otherwise
    ops = 'plain'    flax's layers everywhere
    ops = 'xla_cpu'  the XLA:CPU layers (`backends.xla_cpu`) everywhere

Both sets have the same parameter names and shapes, so a checkpoint moves between them (CPU <-> GPU) freely.
The choice is made from the devices the program runs on, never from `jax.default_backend()` inside a layer.
"""
from typing import Iterable

from vqgan_jax.errors import UserError

OPS = ("auto", "plain", "xla_cpu")


def resolve(ops: str, devices: Iterable) -> str:
    """config.ops ('auto' | 'plain' | 'xla_cpu') and the devices a program runs on -> 'plain' | 'xla_cpu'."""
    ops = str(ops)
    if ops not in OPS:
        raise UserError(f"ops={ops!r} is not one of {'|'.join(OPS)}: set --config.ops")
    if ops != "auto":
        return ops
    devices = list(devices)
    return "xla_cpu" if devices and all(d.platform == "cpu" for d in devices) else "plain"


def vqgan_layers(kind: str, disable=(), *, mesh=None) -> dict:
    """Layer constructors for the VQGAN autoencoder and discriminator ({} = flax's own). mesh: the training
    mesh, when the layers will be differentiated over a batch split across its devices (the XLA:CPU layers
    then sum bias gradients in a sharding-friendly order, `xla_cpu.sums.bias_grad`)."""
    if kind == "plain":
        return {}
    from vqgan_jax.backends import xla_cpu
    return xla_cpu.vqgan_layers(disable, sharded_batch=_sharded(mesh))


def gpt2_layers(kind: str, disable=(), *, mesh=None) -> dict:
    """Layer constructors for GPT-2 ({} = flax's own); mesh as in `vqgan_layers`."""
    if kind == "plain":
        return {}
    from vqgan_jax.backends import xla_cpu
    return xla_cpu.gpt2_layers(disable, sharded_batch=_sharded(mesh))


def _sharded(mesh) -> bool:
    return mesh is not None and mesh.devices.size > 1


def decode_chunk_len(kind: str) -> int:
    """Positions per KV-cache chunk when sampling: the CPU backend decodes in chunks, others in one (0)."""
    if kind == "plain":
        return 0
    from vqgan_jax.backends import xla_cpu
    return xla_cpu.DECODE_CHUNK_LEN


def init_compiler_options(kind: str) -> dict | None:
    """Compiler options for one-off initialisers (None: the defaults)."""
    if kind == "plain":
        return None
    from vqgan_jax.backends import xla_cpu
    return xla_cpu.INIT_COMPILER_OPTIONS
