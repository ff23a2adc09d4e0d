"""A/B timing of the CPU rules in `vqgan_jax.fastops` / `vqgan_jax.dropout`: every variant is compiled in one
process and their steps are timed interleaved, so this machine's drift hits all of them alike.

    python bench/ab.py --stage prior --variants ours,plain_dense [--dropout 0.1] [--reps 8]
    python bench/ab.py --stage prior --variants ours,flax_dropout --dropout 0.1
    python bench/ab.py --stage prior --variants ours,flax_layernorm
    python bench/ab.py --stage vqgan --variants ours,plain
    python bench/ab.py --stage vqgan --variants ours,no_materialize
    python bench/ab.py --stage vqgan --variants ours,plain_stride2
    python bench/ab.py --stage vqgan --variants ours,direct_3x3,plain_upsample,conv_1x1,session7

Variants: ours (the library as it is); plain_dense (GPT-2's dense layers under autodiff's own gradient);
flax_dropout (flax.linen.Dropout in GPT-2); flax_layernorm (flax.linen.LayerNorm in GPT-2, whose scale
and bias gradients XLA:CPU sums with reduce-windows); no_materialize (GroupNorm's per-channel coefficients
left for XLA to fuse into the maps that read them, as before session 5; meant for --stage vqgan:
for the prior it also turns `materialize_grad` off, which shares `fastops._materialize`);
plain_stride2 (stride-2 convs, the VQGAN's downsampling and the discriminator's, under XLA's own
gradient, as before session 6); plain_upsample (the decoder's upsampling convs under autodiff's gradient,
as before session 8); conv_1x1 (1x1 convs as convolutions, not dense layers, as before session 8);
direct_3x3 (no Winograd: every 3x3 conv is XLA's convolution, as before session 8); session7 (all
three of session 8's changes off); plain (every fastops rule off: the formulas other backends
get, i.e. for the VQGAN its conv biases as y + b and GroupNorm with jnp.sum under autodiff; for the
prior also without `materialize_grad`). flowers64 config, batch 16,
random data, perceptual loss off and the discriminator on from step 0 (as bench/train_step.py).
Prints one JSON line per variant: median and min seconds per step, the median CPU seconds per step
(all threads; less moved by other tenants of a shared machine than wall time), and the loss after the warm-up
steps (equal to float32 rounding across variants).
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

from absl import app, flags  # noqa: E402

_STAGE = flags.DEFINE_enum("stage", "prior", ["prior", "vqgan"], "Which train step.")
_VARIANTS = flags.DEFINE_list("variants", ["ours"], "Comma-separated variant names (see the docstring).")
_REPS = flags.DEFINE_integer("reps", 8, "Timed steps per variant (interleaved).")
_DROPOUT = flags.DEFINE_float("dropout", 0.0, "prior.dropout for --stage prior.")

from vqgan_jax import fastops, gpt2, layers  # noqa: E402

_ON_CPU = fastops._on_cpu
_MATERIALIZE = fastops._materialize
_LAYER_NORM = gpt2.LayerNorm
_NO_PADDING = layers._no_padding


def _patch(name: str) -> None:
    """Sets the library's module globals for variant `name` (read when the step is traced)."""
    import flax.linen as nn
    import jax

    from vqgan_jax import fastconv, fastops, gpt2, layers
    from vqgan_jax.dropout import Dropout
    if name not in ("ours", "plain_dense", "flax_dropout", "flax_layernorm", "no_materialize", "plain_stride2",
                    "plain_upsample", "conv_1x1", "direct_3x3", "session7", "plain"):
        raise SystemExit(f"unknown variant {name!r}")
    gpt2.dense, gpt2.Dropout, fastops._on_cpu = fastops.dense, Dropout, _ON_CPU
    gpt2.LayerNorm = _LAYER_NORM
    layers.conv2d, layers.upsample_conv, layers._no_padding = fastconv.conv2d, fastconv.upsample_conv, _NO_PADDING
    fastconv.use_winograd = True
    fastops._materialize = _MATERIALIZE
    if name == "plain_dense":
        gpt2.dense = lambda x, w, b: jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))) + b
    elif name == "flax_dropout":
        gpt2.Dropout = nn.Dropout
    elif name == "flax_layernorm":
        gpt2.LayerNorm = lambda epsilon, dtype, name: nn.LayerNorm(epsilon=epsilon, dtype=dtype,
                                                                     use_fast_variance=False, name=name)
    elif name == "no_materialize":
        fastops._materialize = lambda a: a
    elif name == "plain_stride2":
        layers.conv2d = lambda x, w, stride, padding: (  # stride-1 convs keep their rules (Winograd)
            fastconv._conv(x, w, (2, 2), padding) if stride == 2 else fastconv.conv2d(x, w, stride, padding))
    if name in ("plain_upsample", "session7"):
        layers.upsample_conv = lambda x, k: fastconv._phase_convs(x, fastconv.fold_upsample_kernel(k).astype(x.dtype))
    if name in ("conv_1x1", "session7"):
        layers._no_padding = lambda padding: False
    if name in ("direct_3x3", "session7"):
        fastconv.use_winograd = False
    if name == "plain":
        fastops._on_cpu = lambda: False


def _setup(stage: str, dropout: float):
    """(step, state, batch, loss key) for the flowers64 config; the step is a fresh jit (traced anew)."""
    import jax
    import numpy as np

    from configs import flowers64
    from vqgan_jax import parallel
    cfg = flowers64.get_config()
    rng = np.random.default_rng(0)
    if stage == "prior":
        from vqgan_jax.stage2 import PriorSetup, make_gpt2_config
        from vqgan_jax.steps import PriorTokens
        p = cfg.prior
        p.dropout = dropout
        tokens = PriorTokens(num_codes=cfg.quantizer.num_codes, num_classes=0)
        setup = PriorSetup(p, tokens, make_gpt2_config(p, tokens, 257))
        host = {"ids": rng.integers(0, tokens.num_codes, (p.batch_size, 256)).astype(np.int32),
                "label": np.zeros((p.batch_size,), np.int32)}
        fn = setup.step.__wrapped__
        step = parallel.jit_step(lambda *a: fn(*a), setup.mesh, setup.state_sharding)
        return step, setup.init_state(0), parallel.global_batch(host, setup.mesh), "loss"
    from vqgan_jax.stage1 import VQGANSetup
    cfg.loss.perceptual_weight, cfg.loss.disc_start = 0.0, 0
    setup = VQGANSetup(cfg)
    size, bs = cfg.data.image_size, cfg.train.batch_size
    host = {"image": rng.uniform(-1, 1, (bs, size, size, 3)).astype(np.float32), "label": np.zeros((bs,), np.int32)}
    fn, rep = setup._step_jit.__wrapped__, parallel.replicated(setup.mesh)
    shardings = (setup.state_sharding, parallel.batch_sharding(setup.mesh), rep, rep)
    jitted = jax.jit(lambda *a: fn(*a), in_shardings=shardings,
                     out_shardings=(setup.state_sharding, rep), donate_argnums=(0,))
    return (lambda s, b, k: jitted(s, b, k, setup.consts)), setup.init_state(0), \
        parallel.global_batch(host, setup.mesh), "g/rec"


def main(_):
    import jax

    from vqgan_jax import cli
    cli.quiet_logs()
    key = jax.random.PRNGKey(0)
    runs = {}
    for name in _VARIANTS.value:
        _patch(name)
        step, state, batch, loss_key = _setup(_STAGE.value, _DROPOUT.value)
        for i in range(2):  # compile + one warm-up step
            state, m = step(state, batch, jax.random.fold_in(key, i))
        runs[name] = {"step": step, "state": state, "batch": batch, "times": [], "cpu": [],
                      "loss_after_2": float(jax.device_get(m[loss_key]))}
    _patch("ours")
    for rep in range(_REPS.value):
        for r in runs.values():
            t, c = time.perf_counter(), time.process_time()
            r["state"], m = r["step"](r["state"], r["batch"], jax.random.fold_in(key, 2 + rep))
            jax.block_until_ready(m)
            r["times"].append(time.perf_counter() - t)
            r["cpu"].append(time.process_time() - c)
    for name, r in runs.items():
        print(json.dumps({"stage": _STAGE.value, "variant": name, "dropout": _DROPOUT.value,
                          "median_step_s": round(statistics.median(r["times"]), 4),
                          "min_step_s": round(min(r["times"]), 4),
                          "median_cpu_s": round(statistics.median(r["cpu"]), 4), "loss_after_2": r["loss_after_2"]}))


if __name__ == "__main__":
    app.run(main)
