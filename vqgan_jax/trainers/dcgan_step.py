"""The DCGAN's train step and its static setup (models, optimisers, the jitted step).

One step, as PyTorch's DCGAN example: draw z, make fakes G(z) once; update D on the real batch and the
(stopped) fakes; then update G through the *updated* D on the same fakes. The generator's forward runs
once (`jax.vjp`), and its backward pass starts from the gradient of G's loss with respect to the fakes.

BatchNorm statistics: every forward pass in training mode normalises with its batch's statistics and
updates the running averages (G once, D on the reals, the fakes, and the fakes again for G's loss, in
that order, as PyTorch does). Under the sharded jit the batch axis spans every device, so those
statistics are the global batch's, never one device's slice: the step on 8 devices computes what it
computes on 1 (tests/trainers/test_dcgan_step.py).
"""
from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from vqgan_jax.losses import gan
from vqgan_jax.models import dcgan
from vqgan_jax.train import optim, parallel, setups
from vqgan_jax.train.checkpoint import abstract_like


@flax.struct.dataclass
class DCGANState:
    """step: int32 scalar (updates done). g_params / d_params: Flax params of G and D. g_stats / d_stats:
    their BatchNorm running averages (`batch_stats`). g_opt / d_opt: optax states. ema_params: EMA of
    g_params (sampling uses it with g_stats when optim.ema_decay > 0; an unread copy otherwise)."""
    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any
    d_stats: Any
    g_opt: Any
    d_opt: Any
    ema_params: Any


def sigmoid_mean(logits: jax.Array) -> jax.Array:
    """D's mean probability that its inputs are real: mean(sigmoid(logits)), float32 scalar."""
    return jnp.mean(jax.nn.sigmoid(logits.astype(jnp.float32)))


def dcgan_train_step(state: DCGANState, batch: dict, rng: jax.Array, *, gen, disc, g_tx, d_tx, z_dim: int,
                     loss_kind: str, ema_decay: float, conditional: bool):
    """One D update and one G update.

    batch: {'image': float32 (B, S, S, C) in [-1, 1], 'label': int32 (B,)}; rng: this step's key (z).
    Returns (state, metrics) with metrics 'd/loss', 'g/loss', 'd/real' = D(x), 'd/fake' = D(G(z)) before
    D's update, 'd/fake_after' = D(G(z)) after it (what G's loss sees), all float32 scalars.
    """
    x = batch["image"]
    labels = batch["label"] if conditional else None
    z = jax.random.normal(rng, (x.shape[0], z_dim), jnp.float32)              # (B, z_dim)

    def generate(g_params):
        fake, new = gen.apply({"params": g_params, "batch_stats": state.g_stats}, z, labels, train=True,
                              mutable=["batch_stats"])
        return fake, new.get("batch_stats", {})

    fake, g_vjp, g_stats = jax.vjp(generate, state.g_params, has_aux=True)   # fake: (B, S, S, C)

    def d_apply(d_params, d_stats, images):
        logits, new = disc.apply({"params": d_params, "batch_stats": d_stats}, images, labels, train=True,
                                 mutable=["batch_stats"])
        return logits, new.get("batch_stats", {})

    def d_loss_fn(d_params):
        real, stats = d_apply(d_params, state.d_stats, x)
        fake_logits, stats = d_apply(d_params, stats, jax.lax.stop_gradient(fake))
        return gan.d_loss(real, fake_logits, loss_kind), (real, fake_logits, stats)

    (d_loss, (real_logits, fake_logits, d_stats)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
        state.d_params)
    d_updates, d_opt = d_tx.update(d_grads, state.d_opt, state.d_params)
    d_params = optax.apply_updates(state.d_params, d_updates)

    def g_loss_fn(images):
        logits, stats = d_apply(d_params, d_stats, images)
        return gan.g_adv_loss(logits, loss_kind), (logits, stats)

    (g_loss, (after_logits, d_stats)), fake_grad = jax.value_and_grad(g_loss_fn, has_aux=True)(fake)
    (g_grads,) = g_vjp(fake_grad)
    g_updates, g_opt = g_tx.update(g_grads, state.g_opt, state.g_params)
    g_params = optax.apply_updates(state.g_params, g_updates)
    ema = state.ema_params
    if ema_decay > 0:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, g_params)

    metrics = {"d/loss": d_loss, "g/loss": g_loss, "d/real": sigmoid_mean(real_logits),
               "d/fake": sigmoid_mean(fake_logits), "d/fake_after": sigmoid_mean(after_logits),
               "g/grad_norm": optax.global_norm(g_grads), "d/grad_norm": optax.global_norm(d_grads)}
    new_state = state.replace(step=state.step + 1, g_params=g_params, d_params=d_params, g_stats=g_stats,
                              d_stats=d_stats, g_opt=g_opt, d_opt=d_opt, ema_params=ema)
    return new_state, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics)


class DCGANSetup:
    """Everything static about a DCGAN run: G, D, optimisers, the jitted step and generation."""

    def __init__(self, config, mesh=None):
        self.config = config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.gen = dcgan.from_config(config)
        self.disc = dcgan.discriminator_from_config(config)
        self.conditional = self.gen.num_classes > 0
        self.z_dim = int(config.model.z_dim)
        self.channels = int(config.data.channels)
        self.image_size = int(config.data.image_size)
        dcgan.num_upsamplings(self.image_size)  # a size the architecture cannot make fails here, in one line
        gan.d_loss(jnp.zeros(1), jnp.zeros(1), config.loss.kind)  # an unknown kind fails here, in one line
        o = config.optim
        self.g_tx = optim.adam(o.g_lr, b1=o.b1, b2=o.b2)
        self.d_tx = optim.adam(o.d_lr, b1=o.b1, b2=o.b2)
        self.ema_decay = float(o.ema_decay)
        step = functools.partial(dcgan_train_step, gen=self.gen, disc=self.disc, g_tx=self.g_tx, d_tx=self.d_tx,
                                 z_dim=self.z_dim, loss_kind=str(config.loss.kind), ema_decay=self.ema_decay,
                                 conditional=self.conditional)
        self.state_sharding = parallel.replicated(self.mesh)
        self.step = parallel.jit_step(step, self.mesh, self.state_sharding)

    @classmethod
    def shared(cls, config, mesh=None) -> "DCGANSetup":
        """One setup per process for the same config (less `train`) and mesh (see `train.setups`)."""
        mesh = mesh if mesh is not None else parallel.make_mesh()
        key = setups.config_key({k: v for k, v in config.to_dict().items() if k != "train"})
        return setups.shared("dcgan", (key, setups.mesh_key(mesh)), lambda: cls(config, mesh))

    def _init(self, rng: jax.Array) -> DCGANState:
        k_g, k_d = jax.random.split(rng)
        z = jnp.zeros((1, self.z_dim), jnp.float32)
        x = jnp.zeros((1, self.image_size, self.image_size, self.channels), jnp.float32)
        labels = jnp.zeros((1,), jnp.int32) if self.conditional else None
        g = self.gen.init(k_g, z, labels, train=False)
        d = self.disc.init(k_d, x, labels, train=False)
        return DCGANState(step=jnp.zeros((), jnp.int32), g_params=g["params"], d_params=d["params"],
                          g_stats=g.get("batch_stats", {}), d_stats=d.get("batch_stats", {}),
                          g_opt=self.g_tx.init(g["params"]), d_opt=self.d_tx.init(d["params"]),
                          ema_params=g["params"] if self.ema_decay > 0 else {})

    def init_state(self, seed: int) -> DCGANState:
        return parallel.run_once_jitted(self._init, jax.random.PRNGKey(seed), out_shardings=self.state_sharding)

    def abstract_state(self) -> DCGANState:
        return abstract_like(jax.eval_shape(self._init, jax.random.PRNGKey(0)), self.state_sharding)

    def sampling_variables(self, state: DCGANState) -> dict:
        """{'params', 'batch_stats'} of the generator that samples: EMA weights when kept."""
        return {"params": state.ema_params if self.ema_decay > 0 else state.g_params, "batch_stats": state.g_stats}

    @functools.cached_property
    def _generate_jit(self):
        return jax.jit(lambda v, z, labels: self.gen.apply(v, z, labels, train=False))

    def generate(self, state: DCGANState, z, labels=None) -> jax.Array:
        """z: float32 (N, z_dim), labels int32 (N,) or None -> float32 (N, S, S, C) in [-1, 1], with the
        running BatchNorm averages (each image depends on its own z only)."""
        return self._generate_jit(self.sampling_variables(state), z, labels if self.conditional else None)
