"""The XLA:CPU backend: layers with flax's signatures and parameter names, written for XLA:CPU's fast paths.

A trainer picks this backend for a mesh of CPU devices (`vqgan_jax.backends.resolve`) and passes its
layer constructors to the models; the models themselves stay plain Flax. Each rule here can be switched
off by name (`vqgan_layers(disable=...)`, `gpt2_layers(disable=...)`), which `bench/ab.py` uses to measure
what it gains; docs/cpu-backend.md records the measurements and why each rule stays.
"""
import functools

# Rules of the VQGAN's layers (autoencoder and discriminator).
VQGAN_RULES = ("winograd_3x3", "bias_sum", "upsample", "group_norm")
# Rules of GPT-2's layers.
GPT2_RULES = ("dense", "residual_barrier", "dropout16", "blocked_attention")
# Positions per decoding chunk (see `vqgan_jax.sampling.autoregressive.sample`): the cache is cut to the
# positions written by each chunk's end, so attention reads about half of it on average.
DECODE_CHUNK_LEN = 32
# XLA:CPU spends seconds optimising threefry random-number code (about 3 s for one normal draw), and
# an init draws every parameter once: compiled without backend optimisation it is much faster to
# build and runs once anyway. The RNG bits are exact, but the float maths after them may round differently:
# some weights can differ from an optimised init's by an ulp (the PatchGAN's do not:
# tests/train/test_parallel.py; the DCGAN's would). Every run of a trainer uses this same init, so seeds
# still reproduce.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _check(disable, rules) -> frozenset:
    disable = frozenset(disable)
    unknown = disable - set(rules)
    if unknown:
        raise ValueError(f"unknown XLA:CPU rules {sorted(unknown)}; known: {rules}")
    return disable


def vqgan_layers(disable=(), sharded_batch: bool = False) -> dict:
    """Layer constructors for `models.vqgan.from_config` / `models.patchgan.from_config` (conv, norm,
    upsample), with the named rules of VQGAN_RULES switched off (their plain flax counterparts instead).
    sharded_batch: the batch axis is split over several devices (bias gradients: `sums.bias_grad`)."""
    from vqgan_jax.backends.xla_cpu import conv, norm
    from vqgan_jax.nn import layers
    off = _check(disable, VQGAN_RULES)
    out = {"conv": functools.partial(conv.Conv, winograd_3x3="winograd_3x3" not in off,
                                     bias_sum="bias_sum" not in off, sharded_batch=sharded_batch)}
    if "upsample" not in off:
        out["upsample"] = functools.partial(conv.Upsample, bias_sum="bias_sum" not in off,
                                            sharded_batch=sharded_batch)
    else:
        out["upsample"] = layers.Upsample
    if "group_norm" not in off:
        out["norm"] = norm.GroupNorm
    return out


def gpt2_layers(disable=(), sharded_batch: bool = False) -> dict:
    """Layer constructors for `models.gpt2.GPT2LMHead` (dense, dropout_layer, attention_fn, block), with
    the named rules of GPT2_RULES switched off; sharded_batch as in `vqgan_layers`."""
    from vqgan_jax.backends.xla_cpu import attention, blocks, dense, dropout
    off = _check(disable, GPT2_RULES)
    out = {}
    if "dense" not in off:
        out["dense"] = functools.partial(dense.Dense, sharded_batch=sharded_batch)
    if "residual_barrier" not in off:
        out["block"] = blocks.Block
    if "dropout16" not in off:
        out["dropout_layer"] = dropout.Dropout
    if "blocked_attention" not in off:
        out["attention_fn"] = attention.blocked_causal_attention
    return out
