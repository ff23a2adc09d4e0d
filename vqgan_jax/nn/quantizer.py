"""The vector quantizer between the VQGAN encoder and decoder, and the dead-code restart it shares with
the train step.

The codebook is either learned by gradient (in 'params') or by an exponential moving average of the
encoder outputs assigned to each code (in the 'vq_stats' collection). Every statistic is taken over the
whole array the module sees: under jax.jit with the batch sharded over a mesh that is the global batch,
so no collective (pmean, axis names) is needed.
"""
from typing import Any

import jax
import jax.scipy.special
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any
_HIGHEST = jax.lax.Precision.HIGHEST


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
    """x / ||x|| over the last axis (a zero vector stays zero)."""
    return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), eps))


def restart_dead_codes(codebook: jax.Array, usage: jax.Array, z_flat: jax.Array, rng: jax.Array,
                       threshold: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Replace codes whose usage EMA is below `threshold` by random rows of `z_flat`.

    codebook: float (K, D); usage: float32 (K,) EMA of assignments per step; z_flat: float (N, D) encoder
    outputs of the current (global) batch; rng: a PRNG key. Returns (new_codebook (K, D), new_usage (K,)
    with restarted codes set to 1 so they are not restarted again at once, num_restarted int32 scalar).
    Live codes are returned bit-for-bit unchanged. Rows are drawn without replacement when N >= K, so two
    dead codes never restart onto the same vector.
    """
    num_codes, n = codebook.shape[0], z_flat.shape[0]
    rows = jax.random.choice(rng, n, (num_codes,), replace=n < num_codes)
    dead = usage < threshold
    new_codebook = jnp.where(dead[:, None], z_flat[rows].astype(codebook.dtype), codebook)
    new_usage = jnp.where(dead, jnp.ones_like(usage), usage)
    return new_codebook, new_usage, jnp.sum(dead).astype(jnp.int32)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization with a straight-through gradient.

    Variables: 'params'/'codebook' (K, D) unless `ema`, in which case 'vq_stats' holds 'codebook',
    'cluster_size' (K,) and 'embed_sum' (K, D) instead; 'vq_stats'/'usage' (K,) always (EMA of the
    per-step assignment count of each code, for dead-code restarts). 'vq_stats' is updated only in train
    mode, when the caller makes it mutable, and never during init. Restarting dead codes of the gradient
    codebook is left to the train step (a module cannot write 'params'): it calls `restart_dead_codes`.
    """
    num_codes: int
    code_dim: int
    beta: float = 0.25
    l2_normalize: bool = False
    ema: bool = False
    ema_decay: float = 0.99
    eps: float = 1e-5
    restart_threshold: float = 0.0
    usage_decay: float = 0.99
    dtype: Dtype = jnp.float32

    def setup(self):
        k, d = self.num_codes, self.code_dim
        if self.l2_normalize:
            init = nn.initializers.normal(1.0)  # direction only matters; normalised on use
        else:
            init = nn.initializers.uniform(2.0 / k)  # shifted below to uniform(-1/K, 1/K), as taming

        def init_codebook(key, shape=(k, d)):
            e = init(key, shape, jnp.float32)
            return e if self.l2_normalize else e - 1.0 / k

        if self.ema:
            rng = self.make_rng("params") if self.is_initializing() else None
            self.ema_codebook = self.variable("vq_stats", "codebook", init_codebook, rng)
            # Start as if each code had been assigned its own initial vector once: codebook ==
            # embed_sum / cluster_size, so a code that is never used stays (almost exactly) where it is.
            self.cluster_size = self.variable("vq_stats", "cluster_size", jnp.ones, (k,), jnp.float32)
            self.embed_sum = self.variable("vq_stats", "embed_sum", lambda: self.ema_codebook.value)
        else:
            self.codebook = self.param("codebook", init_codebook)
        # Start at 1 assignment/step so no code counts as dead before it has had a chance.
        self.usage = self.variable("vq_stats", "usage", jnp.ones, (k,), jnp.float32)

    def _codes(self) -> jax.Array:
        """The codebook as used for lookup: float32 (K, D), unit rows with l2_normalize."""
        e = self.ema_codebook.value if self.ema else self.codebook
        e = e.astype(jnp.float32)
        return l2_normalize(e) if self.l2_normalize else e

    def embed(self, ids: jax.Array) -> jax.Array:
        """Codes for integer ids: (...) -> (..., D) in `dtype`."""
        return jnp.take(self._codes(), ids, axis=0).astype(self.dtype)

    def __call__(self, z: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        """z: float (B, h, w, D) -> (z_q (B, h, w, D) in `dtype`, aux).

        aux: 'loss' (codebook_loss + beta * commit_loss; beta * commit_loss only with ema), 'codebook_loss',
        'commit_loss', 'indices' int32 (B, h, w), 'usage' (distinct codes in the batch / K), 'perplexity'
        (exp of the entropy of the batch's code histogram), 'z_e' float32 (B, h, w, D) (z, normalised with
        l2_normalize), 'num_restarted' int32 (codes restarted inside the module this step).
        """
        k = self.num_codes
        z = z.astype(jnp.float32)
        if self.l2_normalize:
            z = l2_normalize(z)
        codes = self._codes()
        z_flat = z.reshape(-1, self.code_dim)

        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, all in float32 at full matmul precision.
        dist = (jnp.sum(z_flat ** 2, axis=1, keepdims=True)
                - 2.0 * jnp.dot(z_flat, codes.T, precision=_HIGHEST)
                + jnp.sum(codes ** 2, axis=1)[None, :])
        idx_flat = jnp.argmin(dist, axis=1).astype(jnp.int32)
        e = jnp.take(codes, idx_flat, axis=0).reshape(z.shape)

        # Losses before the straight-through step; beta weighs the commitment term.
        sg = jax.lax.stop_gradient
        codebook_loss = jnp.mean((sg(z) - e) ** 2)
        commit_loss = jnp.mean((z - sg(e)) ** 2)
        loss = self.beta * commit_loss if self.ema else codebook_loss + self.beta * commit_loss
        z_q = z + sg(e - z)

        onehot = jax.nn.one_hot(idx_flat, k, dtype=jnp.float32)  # (N, K)
        counts = jnp.sum(onehot, axis=0)
        probs = counts / z_flat.shape[0]
        entropy = -jnp.sum(jax.scipy.special.xlogy(probs, probs))  # 0 log 0 = 0
        num_restarted = jnp.zeros((), jnp.int32)

        if train and self.is_mutable_collection("vq_stats") and not self.is_initializing():
            num_restarted = self._update_stats(sg(z_flat), sg(onehot), counts)

        aux = {
            "loss": loss,
            "codebook_loss": codebook_loss,
            "commit_loss": commit_loss,
            "indices": idx_flat.reshape(z.shape[:-1]),
            "usage": jnp.mean((counts > 0).astype(jnp.float32)),
            "perplexity": jnp.exp(entropy),
            "z_e": z,
            "num_restarted": num_restarted,
        }
        return z_q.astype(self.dtype), aux

    def _update_stats(self, z_flat: jax.Array, onehot: jax.Array, counts: jax.Array) -> jax.Array:
        """Usage EMA, EMA codebook (Laplace-smoothed) and in-module restarts. Returns num_restarted."""
        usage = self.usage_decay * self.usage.value + (1.0 - self.usage_decay) * counts
        num_restarted = jnp.zeros((), jnp.int32)
        if self.ema:
            d = self.ema_decay
            cluster_size = d * self.cluster_size.value + (1.0 - d) * counts
            embed_sum = d * self.embed_sum.value + (1.0 - d) * jnp.dot(onehot.T, z_flat, precision=_HIGHEST)
            # Laplace smoothing keeps every divisor > 0 while preserving the total count n.
            n = jnp.sum(cluster_size)
            smoothed = (cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
            codebook = embed_sum / smoothed[:, None]
            if self.restart_threshold > 0:
                dead = usage < self.restart_threshold
                codebook, usage, num_restarted = restart_dead_codes(
                    codebook, usage, z_flat, self.make_rng("vq"), self.restart_threshold)
                # A restarted code starts over as if assigned its new vector once (as at init).
                cluster_size = jnp.where(dead, 1.0, cluster_size)
                embed_sum = jnp.where(dead[:, None], codebook, embed_sum)
            self.cluster_size.value = cluster_size
            self.embed_sum.value = embed_sum
            self.ema_codebook.value = codebook
        self.usage.value = usage
        return num_restarted
