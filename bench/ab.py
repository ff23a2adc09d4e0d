"""Interleaved A/B timing of the XLA:CPU backend's rules: every variant is compiled in one process and
their steps are timed in turns, so this machine's drift hits all of them alike.

    python bench/ab.py --stage vqgan --variants xla_cpu,-winograd_3x3,-group_norm,plain [--reps 8]
    python bench/ab.py --stage prior --variants xla_cpu,-dense,-residual_barrier,plain [--dropout 0.1]
    python bench/ab.py --stage sample --variants xla_cpu,-chunked_decode,plain

Variants: `xla_cpu` (every rule of `vqgan_jax.backends.xla_cpu` on), `plain` (flax's own layers), and
`-RULE` (xla_cpu with that one rule switched off: its plain counterpart instead; `-RULE1/RULE2` switches
off both), for the rules in
`xla_cpu.VQGAN_RULES` (stage vqgan), `xla_cpu.GPT2_RULES` (stage prior) and `chunked_decode` (stage
sample). The flowers64 config: stage vqgan is the full G + D step at batch 16 with the perceptual loss
off and the discriminator on from step 0 (as bench/train_step.py); stage prior the GPT-2 step at batch
16 x 256 tokens; stage sample one cached sampling call of 16 x 256 tokens (top-k 100).
Prints one JSON line per variant: median and min seconds per step, the median CPU seconds per step (all
threads), and a loss (or the drawn tokens' checksum) after the warm-up, equal across variants to float
rounding. The gain a rule shows is `-RULE`'s median over `xla_cpu`'s, minus 1.
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache)

from absl import app, flags  # noqa: E402

_STAGE = flags.DEFINE_enum("stage", "vqgan", ["vqgan", "prior", "sample"], "Which program to time.")
_VARIANTS = flags.DEFINE_list("variants", ["xla_cpu", "plain"], "Comma-separated variants (see the docstring).")
_REPS = flags.DEFINE_integer("reps", 8, "Timed steps per variant (interleaved).")
_DROPOUT = flags.DEFINE_float("dropout", 0.0, "prior.dropout for --stage prior.")


def _variant(name: str) -> tuple[str, tuple]:
    """'xla_cpu' | 'plain' | '-RULE' -> (ops, rules switched off)."""
    if name in ("xla_cpu", "plain"):
        return name, ()
    if name.startswith("-"):
        return "xla_cpu", tuple(name[1:].split("/"))
    raise SystemExit(f"unknown variant {name!r}: xla_cpu, plain or -RULE")


def _prior_setup(cfg, ops, off, dropout):
    from vqgan_jax.data.tokens import PriorTokens
    from vqgan_jax.trainers.ar_prior import PriorSetup, make_gpt2_config
    p = cfg.prior
    p.dropout = dropout
    tokens = PriorTokens(num_codes=cfg.quantizer.num_codes, num_classes=0)
    return PriorSetup(p, tokens, make_gpt2_config(p, tokens, 257), ops=ops, disable_rules=off), tokens


def _setup(stage: str, name: str, dropout: float):
    """(call: state -> (state, scalar), state) for the flowers64 config and variant `name`."""
    import jax
    import numpy as np

    from configs import flowers64
    from vqgan_jax.train import parallel
    cfg = flowers64.get_config()
    ops, off = _variant(name)
    rng = np.random.default_rng(0)
    key = jax.random.PRNGKey(0)
    if stage == "vqgan":
        from vqgan_jax.trainers.vqgan import VQGANSetup
        cfg.loss.perceptual_weight, cfg.loss.disc_start, cfg.ops = 0.0, 0, ops
        setup = VQGANSetup(cfg, disable_rules=off)
        size, bs = cfg.data.image_size, cfg.train.batch_size
        host = {"image": rng.uniform(-1, 1, (bs, size, size, 3)).astype(np.float32),
                "label": np.zeros((bs,), np.int32)}
        batch = parallel.global_batch(host, setup.mesh)

        def call(state, i):
            state, m = setup.step(state, batch, jax.random.fold_in(key, i))
            return state, m["g/rec"]
        return call, setup.init_state(0)
    sample_off = off if stage == "sample" and off == ("chunked_decode",) else ()
    setup, tokens = _prior_setup(cfg, ops, () if stage == "sample" else off, dropout)
    state = setup.init_state(0)
    if stage == "prior":
        host = {"ids": rng.integers(0, tokens.num_codes, (cfg.prior.batch_size, 256)).astype(np.int32),
                "label": np.zeros((cfg.prior.batch_size,), np.int32)}
        batch = parallel.global_batch(host, setup.mesh)

        def call(state, i):
            state, m = setup.step(state, batch, jax.random.fold_in(key, i))
            return state, m["loss"]
        return call, state
    from vqgan_jax import backends
    from vqgan_jax.sampling import prior as prior_sampling
    from vqgan_jax.models.gpt2 import GPT2LMHeadModel
    model = GPT2LMHeadModel(setup.gpt2_config, **backends.gpt2_layers(setup.ops))
    chunk = 0 if sample_off else backends.decode_chunk_len(setup.ops)

    def call(state, i):
        ids = prior_sampling.sample_grids(model, state.params, tokens, (16, 16), cfg.prior.batch_size, key,
                                          top_k=100, chunk_len=chunk)
        return state, float(np.sum(ids % 97))
    return call, state


def main(_):
    import jax

    from vqgan_jax import cli
    cli.quiet_logs()
    runs = {}
    for name in _VARIANTS.value:
        call, state = _setup(_STAGE.value, name, _DROPOUT.value)
        for i in range(2):  # compile + one warm-up call
            state, loss = call(state, i)
        runs[name] = {"call": call, "state": state, "times": [], "cpu": [], "after_warmup": float(loss)}
    for rep in range(_REPS.value):
        for r in runs.values():
            t, c = time.perf_counter(), time.process_time()
            r["state"], loss = r["call"](r["state"], 2 + rep)
            jax.block_until_ready(loss)
            r["times"].append(time.perf_counter() - t)
            r["cpu"].append(time.process_time() - c)
    base = statistics.median(runs[_VARIANTS.value[0]]["times"])
    for name, r in runs.items():
        med = statistics.median(r["times"])
        print(json.dumps({"stage": _STAGE.value, "variant": name, "dropout": _DROPOUT.value,
                          "median_step_s": round(med, 4), "min_step_s": round(min(r["times"]), 4),
                          "median_cpu_s": round(statistics.median(r["cpu"]), 4),
                          f"vs_{_VARIANTS.value[0]}": round(med / base, 4), "after_warmup": r["after_warmup"]}))


if __name__ == "__main__":
    app.run(main)
