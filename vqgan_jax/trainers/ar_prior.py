"""The autoregressive prior's trainer (stage 2): encode the training set with the stage-1 VQGAN once, then
train a GPT-2 over the token grids.

`train(config, workdir)` is what `python train.py --stage prior` calls. It shares the mesh, the loop
(logging, checkpoints, resume, signals, NaN stop) and the run-folder code with stage 1; only the step
(`prior_train_step`) and the model wiring differ.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from transformers import GPT2Config

from vqgan_jax import backends
from vqgan_jax.data import tokens as tokens_lib
from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.errors import UserError
from vqgan_jax.models.gpt2 import GPT2LMHeadModel
from vqgan_jax.nn.layers import dtype_from_name
from vqgan_jax.sampling import prior as prior_sampling
from vqgan_jax.train import loading, loop, optim, parallel, runs, setups
from vqgan_jax.train.checkpoint import abstract_like
from vqgan_jax.train.part import TrainingPart
from vqgan_jax.train.state import PriorState
from vqgan_jax.viz import images as images_lib


def prior_train_step(state, batch: dict, rng: jax.Array, *, model, tx, tokens: PriorTokens,
                     label_dropout: float, pkeep: float):
    """One next-token update of the prior.

    batch: {'ids': int32 (B, T) codebook ids of a flattened grid, 'label': int32 (B,)}.
    The sequence is [start or class token, ids[:-1]] -> predict ids; the loss and accuracy are over the
    T code positions, with logits restricted to the codes (special tokens are never targets).
    """
    ids = batch["ids"].astype(jnp.int32)
    rng_drop, rng_label, rng_keep, rng_rand = jax.random.split(rng, 4)
    first = tokens.first_token(batch["label"])
    if tokens.num_classes > 0 and label_dropout > 0:
        drop = jax.random.bernoulli(rng_label, label_dropout, first.shape)
        first = jnp.where(drop, tokens.null_token, first)
    inputs = ids[:, :-1]
    if pkeep < 1.0:  # taming's token corruption of the inputs (targets stay clean)
        keep = jax.random.bernoulli(rng_keep, pkeep, inputs.shape)
        inputs = jnp.where(keep, inputs, jax.random.randint(rng_rand, inputs.shape, 0, tokens.num_codes))
    seq = jnp.concatenate([first[:, None], inputs], axis=1)  # (B, T)

    def loss_fn(params):
        logits = model.apply({"params": params}, seq, train=True, rngs={"dropout": rng_drop})
        logits = logits[..., : tokens.num_codes].astype(jnp.float32)  # (B, T, K)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, ids).mean()
        return loss, logits

    (loss_val, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt = tx.update(grads, state.opt, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss_val, "accuracy": jnp.mean(jnp.argmax(logits, -1) == ids),
               "grad_norm": optax.global_norm(grads)}
    return state.replace(step=state.step + 1, params=params, opt=opt), \
        jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)




def make_gpt2_config(prior_cfg, tokens: PriorTokens, seq_len: int) -> GPT2Config:
    """GPT-2 settings for a prior: vocabulary = codes + null + classes, context = 1 + grid."""
    return GPT2Config(
        vocab_size=tokens.vocab_size, n_positions=seq_len, n_embd=prior_cfg.n_embd, n_layer=prior_cfg.n_layer,
        n_head=prior_cfg.n_head, resid_pdrop=prior_cfg.dropout, embd_pdrop=prior_cfg.dropout,
        attn_pdrop=prior_cfg.dropout, bos_token_id=tokens.null_token, eos_token_id=tokens.null_token)


class PriorSetup:
    """Static pieces of a prior run: GPT-2 module, optimizer, token layout, the jitted step."""

    def __init__(self, prior_cfg, tokens: PriorTokens, gpt2_config: GPT2Config, mesh=None, *, ops: str = "auto",
                 disable_rules=()):
        self.cfg = prior_cfg
        self.tokens = tokens
        self.gpt2_config = gpt2_config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.ops = backends.resolve(ops, self.mesh.devices.flat)
        self.model = GPT2LMHeadModel(gpt2_config, dtype=dtype_from_name(prior_cfg.dtype),
                                     **backends.gpt2_layers(self.ops, disable_rules, mesh=self.mesh))
        self.tx = optim.adamw(prior_cfg.lr, b1=prior_cfg.b1, b2=prior_cfg.b2, weight_decay=prior_cfg.weight_decay,
                              warmup_steps=prior_cfg.warmup_steps, total_steps=prior_cfg.num_steps,
                              grad_clip=prior_cfg.grad_clip)
        step = functools.partial(prior_train_step, model=self.model, tx=self.tx, tokens=tokens,
                                 label_dropout=float(prior_cfg.label_dropout), pkeep=float(prior_cfg.pkeep))
        self.state_sharding = parallel.replicated(self.mesh)
        self.step = parallel.jit_step(step, self.mesh, self.state_sharding)

    @classmethod
    def shared(cls, prior_cfg, tokens: PriorTokens, gpt2_config: GPT2Config, mesh=None,
               ops: str = "auto") -> "PriorSetup":
        """`PriorSetup(...)`, built once per process for the same prior config (all of it: num_steps
        sets the cosine schedule), token layout, GPT-2 config, ops and mesh (see `train.setups`)."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = (setups.config_key(prior_cfg), repr(tokens), gpt2_config.to_json_string(use_diff=False), ops,
               setups.mesh_key(mesh))
        return setups.shared("prior", key, lambda: cls(prior_cfg, tokens, gpt2_config, mesh, ops=ops))

    def init_state(self, seed: int, params=None) -> PriorState:
        def init(rng):
            p = params
            if p is None:
                p = self.model.init(rng, jnp.zeros((1, self.gpt2_config.n_positions), jnp.int32))["params"]
            return PriorState(step=jnp.zeros((), jnp.int32), params=p, opt=self.tx.init(p))
        return parallel.run_once_jitted(init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding,
                                        compiler_options=backends.init_compiler_options(self.ops))

    def abstract_state(self) -> PriorState:
        shapes = jax.eval_shape(lambda r: PriorState(
            step=jnp.zeros((), jnp.int32),
            params=(p := self.model.init(r, jnp.zeros((1, self.gpt2_config.n_positions), jnp.int32))["params"]),
            opt=self.tx.init(p)), jax.random.PRNGKey(0))
        return abstract_like(shapes, self.state_sharding)


def token_batches(ids: np.ndarray, labels: np.ndarray, *, global_batch: int, seed: int, start_step: int):
    """Endless per-process batches {'ids': int32 (b, T), 'label': int32 (b,)}: this process's rows
    p*b .. (p+1)*b - 1 of each global batch drawn from all the tokens (ids, labels: the whole set, the
    same in every process), so the batches do not depend on the number of processes.

    Epoch e visits the rows in the order of a permutation seeded by (seed, e), so the batch of step s
    is a pure function of s: a resumed run sees exactly the batches an uninterrupted one would.
    """
    b = global_batch // jax.process_count()
    lo = jax.process_index() * b
    n = len(ids)
    if n < global_batch:
        raise UserError(f"only {n} token grids for a batch of {global_batch}: lower prior.batch_size")
    per_epoch = n // global_batch
    step = start_step
    while True:
        epoch, k = divmod(step, per_epoch)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        rows = perm[k * global_batch:(k + 1) * global_batch][lo:lo + b]
        yield {"ids": ids[rows].astype(np.int32), "label": labels[rows].astype(np.int32)}
        step += 1


def encode_training_set(workdir: str, data_cfg, encode: Callable, mesh, vqgan_step: int, *, num_codes: int,
                        flip: bool, batch_size: int | None = None) -> dict:
    """Encodes the stage-1 training split into token shards (or reuses matching ones).

    data_cfg: the stage-1 config's data section (what to read). encode: a jitted function of a global
    image batch float32 (B, H, W, 3) -> (ids int32 (B, h, w), ids of the mirrored images or the same ids
    when flip is False), replicated outputs. Returns the meta dict.
    """
    from vqgan_jax.data import pipeline  # tf.data only where data is read
    out = runs.tokens_dir(workdir)
    meta = tokens_lib.read_meta(out)
    if meta is not None and meta.get("vqgan_step") == vqgan_step and meta.get("flip") == flip:
        print(f"reusing {meta['count']} token grids in {out} "
              f"(made from stage-1 step {vqgan_step})", flush=True)
        return meta
    for old in tokens_lib.shard_paths(out, jax.process_index()):
        os.remove(old)
    n_dev = mesh.devices.size
    bs = batch_size or max(n_dev, (64 // n_dev) * n_dev)
    ds = pipeline.make_dataset(data_cfg, split="train", global_batch_size=bs, seed=0, training=False,
                               process_index=jax.process_index(), process_count=jax.process_count(),
                               repeat=False)
    buf_ids, buf_labels, buf_pos, shard, count, grid = [], [], [], 0, 0, None
    pi = jax.process_index()
    for k, batch in enumerate(pipeline.iterate_numpy(ds)):
        g = parallel.global_batch(batch, mesh)
        ids, ids_flip = jax.device_get(encode(g["image"]))
        # Each process keeps its own rows of the global batch (its local data), with each row's place in
        # the one-process order (batch k's grids, then their mirrored grids), so any number of processes
        # reassembles the same token set (`tokens.load_tokens`).
        b = len(batch["label"])
        ids, ids_flip = np.asarray(ids)[pi * b:(pi + 1) * b], np.asarray(ids_flip)[pi * b:(pi + 1) * b]
        grid = ids.shape[1:]
        rows = pi * b + np.arange(b)
        buf_ids.append(ids)
        buf_labels.append(batch["label"])
        buf_pos.append((2 * k) * bs + rows)
        if flip:
            buf_ids.append(ids_flip)
            buf_labels.append(batch["label"])
            buf_pos.append((2 * k + 1) * bs + rows)
        count += len(ids) * (2 if flip else 1)
        if sum(len(b) for b in buf_ids) >= tokens_lib.SHARD_SIZE:
            tokens_lib.save_shard(out, f"shard_{pi}_{shard:05d}.npz", np.concatenate(buf_ids),
                                  np.concatenate(buf_labels), np.concatenate(buf_pos))
            buf_ids, buf_labels, buf_pos, shard = [], [], [], shard + 1
    if buf_ids:
        tokens_lib.save_shard(out, f"shard_{pi}_{shard:05d}.npz", np.concatenate(buf_ids),
                              np.concatenate(buf_labels), np.concatenate(buf_pos))
    count *= jax.process_count()  # every process encodes the same number of rows
    if count == 0:
        raise UserError(f"no training images were encoded (fewer than one batch of {bs}?)")
    meta = {"num_codes": int(num_codes), "grid": list(grid), "count": count,
            "vqgan_step": int(vqgan_step), "flip": bool(flip), "num_classes": int(data_cfg.num_classes),
            "class_names": list(pipeline.dataset_info(data_cfg).get("class_names", []))}
    if jax.process_index() == 0:
        tokens_lib.write_meta(out, meta)
    parallel.barrier("tokens encoded")  # every process reads every shard next
    print(f"encoded {count} token grids of {grid[0]}x{grid[1]} into {out}", flush=True)
    return meta


def vqgan_encoder(vq: loading.Loaded, flip: bool) -> Callable:
    """A jitted image batch float32 (B, H, W, 3) -> (ids, ids of the mirrored images) for
    `encode_training_set`, sharded over the loaded model's mesh."""
    mesh, model, variables = vq.mesh, vq.model, vq.variables

    def encode(variables, x):
        ids = model.apply(variables, x, method=type(model).encode_to_ids)
        if not flip:
            return ids, ids
        return ids, model.apply(variables, x[:, :, ::-1, :], method=type(model).encode_to_ids)

    enc = jax.jit(encode, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)),
                  out_shardings=parallel.replicated(mesh))
    return lambda x: enc(variables, x)


def train(config, workdir: str) -> dict:
    """Trains (or resumes) the prior in DIR/prior on tokens encoded from DIR/vqgan."""
    p = config.prior
    loop.check_settings("prior", num_steps=p.num_steps, log_every=p.log_every, ckpt_every=p.ckpt_every,
                        keep_checkpoints=p.keep_checkpoints, image_every=p.image_every)
    mesh = parallel.make_mesh()
    parallel.check_batch_size(p.batch_size, mesh)
    vq = loading.load_vqgan(workdir, mesh)
    with TrainingPart(workdir, "prior", config, keep=p.keep_checkpoints, ckpt_every=p.ckpt_every,
                      label="the prior") as part:
        return _train(config, workdir, vq, mesh, part)


def _train(config, workdir: str, vq: loading.Loaded, mesh, part: TrainingPart) -> dict:
    out, p = part.dir, config.prior
    flip = bool(p.flip_tokens)
    encode_training_set(workdir, vq.config.data, vqgan_encoder(vq, flip), mesh, vq.step,
                        num_codes=int(vq.config.quantizer.num_codes), flip=flip)
    ids, labels, meta = tokens_lib.load_tokens(runs.tokens_dir(workdir))
    num_classes = int(meta["num_classes"]) if p.conditional else 0
    tokens = PriorTokens(num_codes=int(meta["num_codes"]), num_classes=num_classes)
    seq_len = tokens_lib.sequence_length(meta)

    init_params = None
    if p.init_from:
        from vqgan_jax.interop import hf_gpt2
        hf_config, hf_params = hf_gpt2.from_pretrained(p.init_from)
        gpt2_config, init_params = hf_gpt2.resize_for_prior(
            hf_config, hf_params, vocab_size=tokens.vocab_size, n_positions=seq_len,
            rng=jax.random.PRNGKey(p.seed))
        gpt2_config.bos_token_id = gpt2_config.eos_token_id = tokens.null_token
        for key in ("n_layer", "n_head", "n_embd"):  # the pretrained network decides its size
            setattr(p, key, int(getattr(gpt2_config, key)))
    else:
        gpt2_config = make_gpt2_config(p, tokens, seq_len)
    setup = PriorSetup.shared(p, tokens, gpt2_config, mesh, ops=config.ops)
    state, start = part.start(setup.abstract_state, lambda: setup.init_state(p.seed, init_params))
    if jax.process_index() == 0:  # after start(): config.json has accepted this network
        gpt2_config.to_json_file(loading.gpt2_config_path(workdir))
        with open(loading.prior_layout_path(workdir), "w") as f:
            json.dump({"num_codes": tokens.num_codes, "num_classes": tokens.num_classes, "grid": meta["grid"],
                       "seq_len": seq_len, "class_names": meta.get("class_names", [])}, f, indent=2)
    if start >= p.num_steps:
        print(f"prior already trained to step {start} (prior.num_steps={p.num_steps}); nothing to do", flush=True)
        return {}
    n_params = sum(x.size for x in jax.tree.leaves(state.params))
    print(f"prior: GPT-2 {gpt2_config.n_layer}x{gpt2_config.n_embd} ({n_params / 1e6:.1f}M params), "
          f"{len(ids)} grids of {seq_len - 1} tokens, {'class-conditional' if num_classes else 'unconditional'}, "
          f"steps {start}->{p.num_steps}", flush=True)
    writer = part.writer

    def on_image(step, state):
        n = max(jax.device_count(), 8)
        labels_ = np.arange(n) % num_classes if num_classes else None
        grid_ids = prior_sampling.sample_grids(
            setup.model, state.params, tokens, meta["grid"], n, jax.random.PRNGKey(step), labels=labels_,
            temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, cfg_scale=p.cfg_scale,
            chunk_len=backends.decode_chunk_len(setup.ops))
        x = prior_sampling.decode_grids(vq, grid_ids)
        picture = images_lib.grid(images_lib.to_uint8(np.asarray(x)), ncols=min(n, 8))
        if jax.process_index() == 0:
            images_lib.save_png(os.path.join(out, "images", f"step_{step:07d}.png"), picture)
            writer.write_image(step, "samples", picture)

    spec = loop.LoopSpec(
        step_fn=setup.step,
        batches=token_batches(ids, labels, global_batch=p.batch_size, seed=p.seed, start_step=start),
        seed_key=jax.random.PRNGKey(p.seed), mesh=mesh, num_steps=p.num_steps, log_every=p.log_every,
        ckpt_every=p.ckpt_every, image_every=p.image_every, items_per_step=p.batch_size * (seq_len - 1),
        rate_name="tokens_per_sec", rate_unit="tok/s", progress_keys=("loss", "accuracy"),
        finite_keys=("loss",), on_image=on_image if p.image_every > 0 else None)
    _, last = loop.run(spec, state, start, part.ckpt, writer)
    return last
