"""Stage 2 wiring: encode the training set with the stage-1 VQGAN, then train a GPT-2 prior on it.

`train_prior(config, workdir)` is what `python train.py --stage prior` calls. It shares the mesh,
the loop (logging, checkpoints, resume, signals, NaN stop) and the run-folder code with stage 1;
only the step (`steps.prior_train_step`) and the model wiring differ.
"""
from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from transformers import GPT2Config

from vqgan_jax import images as images_lib
from vqgan_jax import loops, optim, parallel, runs, setups, tokens as tokens_lib
from vqgan_jax.checkpoint import Checkpointer, abstract_like
from vqgan_jax.errors import UserError
from vqgan_jax.gpt2 import GPT2LMHeadModel
from vqgan_jax.layers import dtype_from_name
from vqgan_jax.metrics import MetricWriter
from vqgan_jax.state import PriorState
from vqgan_jax.steps import PriorTokens, prior_train_step


def gpt2_config_path(workdir: str) -> str:
    return os.path.join(runs.stage_dir(workdir, "prior"), "gpt2_config.json")


def prior_layout_path(workdir: str) -> str:
    return os.path.join(runs.stage_dir(workdir, "prior"), "layout.json")


def make_gpt2_config(prior_cfg, tokens: PriorTokens, seq_len: int) -> GPT2Config:
    """GPT-2 settings for a prior: vocabulary = codes + null + classes, context = 1 + grid."""
    return GPT2Config(
        vocab_size=tokens.vocab_size, n_positions=seq_len, n_embd=prior_cfg.n_embd, n_layer=prior_cfg.n_layer,
        n_head=prior_cfg.n_head, resid_pdrop=prior_cfg.dropout, embd_pdrop=prior_cfg.dropout,
        attn_pdrop=prior_cfg.dropout, bos_token_id=tokens.null_token, eos_token_id=tokens.null_token)


class PriorSetup:
    """Static pieces of a prior run: GPT-2 module, optimizer, token layout, the jitted step."""

    def __init__(self, prior_cfg, tokens: PriorTokens, gpt2_config: GPT2Config, mesh=None):
        self.cfg = prior_cfg
        self.tokens = tokens
        self.gpt2_config = gpt2_config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.model = GPT2LMHeadModel(gpt2_config, dtype=dtype_from_name(prior_cfg.dtype))
        self.tx = optim.adamw(prior_cfg.lr, b1=prior_cfg.b1, b2=prior_cfg.b2, weight_decay=prior_cfg.weight_decay,
                              warmup_steps=prior_cfg.warmup_steps, total_steps=prior_cfg.num_steps,
                              grad_clip=prior_cfg.grad_clip)
        step = functools.partial(prior_train_step, model=self.model, tx=self.tx, tokens=tokens,
                                 label_dropout=float(prior_cfg.label_dropout), pkeep=float(prior_cfg.pkeep))
        self.state_sharding = parallel.replicated(self.mesh)
        self.step = parallel.jit_step(step, self.mesh, self.state_sharding)

    @classmethod
    def shared(cls, prior_cfg, tokens: PriorTokens, gpt2_config: GPT2Config, mesh=None) -> "PriorSetup":
        """`PriorSetup(...)`, built once per process for the same prior config (all of it: num_steps
        sets the cosine schedule), token layout, GPT-2 config and mesh (see `setups.py`)."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = (setups.config_key(prior_cfg), repr(tokens), gpt2_config.to_json_string(use_diff=False),
               setups.mesh_key(mesh))
        return setups.shared("prior", key, lambda: cls(prior_cfg, tokens, gpt2_config, mesh))

    def init_state(self, seed: int, params=None) -> PriorState:
        def init(rng):
            p = params
            if p is None:
                p = self.model.init(rng, jnp.zeros((1, self.gpt2_config.n_positions), jnp.int32))["params"]
            return PriorState(step=jnp.zeros((), jnp.int32), params=p, opt=self.tx.init(p))
        return parallel.run_once_jitted(init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding)

    def abstract_state(self) -> PriorState:
        shapes = jax.eval_shape(lambda r: PriorState(
            step=jnp.zeros((), jnp.int32),
            params=(p := self.model.init(r, jnp.zeros((1, self.gpt2_config.n_positions), jnp.int32))["params"]),
            opt=self.tx.init(p)), jax.random.PRNGKey(0))
        return abstract_like(shapes, self.state_sharding)


def token_batches(ids: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int, start_step: int):
    """Endless per-process batches {'ids': int32 (b, T), 'label': int32 (b,)} of this process's tokens.

    Epoch e visits the rows in the order of a permutation seeded by (seed, e), so the batch of step s
    is a pure function of s: a resumed run sees exactly the batches an uninterrupted one would.
    """
    b = global_batch // jax.process_count()
    n = len(ids)
    if n < b:
        raise UserError(f"only {n} token grids for a per-process batch of {b}: lower prior.batch_size")
    per_epoch = n // b
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        rows = perm[k * b:(k + 1) * b]
        yield {"ids": ids[rows].astype(np.int32), "label": labels[rows].astype(np.int32)}
        step += 1


def load_prior_layout(workdir: str) -> tuple[PriorTokens, GPT2Config, dict]:
    """The token layout and GPT-2 config saved by `train_prior` (what sample.py rebuilds from)."""
    path = prior_layout_path(workdir)
    if not os.path.exists(path) or not os.path.exists(gpt2_config_path(workdir)):
        raise UserError(f"no prior in {runs.stage_dir(workdir, 'prior')}: train one with "
                        f"python train.py --config ... --workdir {workdir} --stage prior")
    with open(path) as f:
        layout = json.load(f)
    tokens = PriorTokens(num_codes=layout["num_codes"], num_classes=layout["num_classes"])
    return tokens, GPT2Config.from_json_file(gpt2_config_path(workdir)), layout


def train_prior(config, workdir: str) -> dict:
    """Trains (or resumes) the prior in DIR/prior on tokens encoded from DIR/vqgan."""
    from vqgan_jax import generate
    out = runs.stage_dir(workdir, "prior")
    p = config.prior
    mesh = parallel.make_mesh()
    parallel.check_batch_size(p.batch_size, mesh)
    vq_config, vq_setup, vq_state, vq_step = tokens_lib.restore_vqgan(workdir)
    meta = tokens_lib.encode_training_set(workdir, vq_config, vq_setup, vq_state, vq_step, flip=bool(p.flip_tokens))
    ids, labels, meta = tokens_lib.load_tokens(workdir)
    num_classes = int(meta["num_classes"]) if p.conditional else 0
    tokens = PriorTokens(num_codes=int(meta["num_codes"]), num_classes=num_classes)
    seq_len = tokens_lib.sequence_length(meta)

    init_params = None
    if p.init_from:
        from vqgan_jax import gpt2_hf
        hf_config, hf_params = gpt2_hf.from_pretrained(p.init_from)
        gpt2_config, init_params = gpt2_hf.resize_for_prior(
            hf_config, hf_params, vocab_size=tokens.vocab_size, n_positions=seq_len,
            rng=jax.random.PRNGKey(p.seed))
        gpt2_config.bos_token_id = gpt2_config.eos_token_id = tokens.null_token
        for key in ("n_layer", "n_head", "n_embd"):  # the pretrained network decides its size
            setattr(p, key, int(getattr(gpt2_config, key)))
    else:
        gpt2_config = make_gpt2_config(p, tokens, seq_len)
    if jax.process_index() == 0:
        runs.write_config(workdir, "prior", config)
        gpt2_config.to_json_file(gpt2_config_path(workdir))
        with open(prior_layout_path(workdir), "w") as f:
            json.dump({"num_codes": tokens.num_codes, "num_classes": tokens.num_classes, "grid": meta["grid"],
                       "seq_len": seq_len, "class_names": meta.get("class_names", [])}, f, indent=2)

    setup = PriorSetup.shared(p, tokens, gpt2_config, mesh)
    ckpt = Checkpointer(runs.checkpoint_dir(workdir, "prior"), keep=p.keep_checkpoints, save_every=p.ckpt_every)
    start = ckpt.latest_step() or 0
    if start:
        state = ckpt.restore(setup.abstract_state(), start)
        print(f"resuming the prior from step {start} in {out}", flush=True)
    else:
        state = setup.init_state(p.seed, init_params)
    if start >= p.num_steps:
        print(f"prior already trained to step {start} (prior.num_steps={p.num_steps}); nothing to do", flush=True)
        return {}
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"prior: GPT-2 {gpt2_config.n_layer}x{gpt2_config.n_embd} ({n_params / 1e6:.1f}M params), "
          f"{len(ids)} grids of {seq_len - 1} tokens, {'class-conditional' if num_classes else 'unconditional'}, "
          f"steps {start}->{p.num_steps}", flush=True)
    writer = MetricWriter(out, enabled=jax.process_index() == 0)

    def on_image(step, state):
        n = max(jax.device_count(), 8)
        labels_ = np.arange(n) % num_classes if num_classes else None
        grid_ids = generate.sample_grids(
            setup.model, state.params, tokens, meta["grid"], n, jax.random.PRNGKey(step), labels=labels_,
            temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, cfg_scale=p.cfg_scale)
        x = generate.decode_grids(vq_setup, vq_state, grid_ids)
        picture = images_lib.grid(images_lib.to_uint8(np.asarray(x)), ncols=min(n, 8))
        if jax.process_index() == 0:
            images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), picture)
            writer.write_image(step, "samples", picture)

    spec = loops.LoopSpec(
        step_fn=setup.step,
        batches=token_batches(ids, labels, global_batch=p.batch_size, seed=p.seed, start_step=start),
        seed_key=jax.random.PRNGKey(p.seed), mesh=mesh, num_steps=p.num_steps, log_every=p.log_every,
        ckpt_every=p.ckpt_every, image_every=p.image_every, items_per_step=p.batch_size * (seq_len - 1),
        rate_name="tokens_per_sec", rate_unit="tok/s", progress_keys=("loss", "accuracy"),
        finite_keys=("loss",), on_image=on_image if p.image_every > 0 else None)
    try:
        _, last = loops.run(spec, state, start, ckpt, writer)
    finally:
        ckpt.close()
        writer.close()
    return last
