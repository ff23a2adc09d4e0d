"""Every generator a run folder can hold, behind one signature, so evaluation and sample.py treat them alike.

    GENERATORS[name](workdir, num, seed, batch_size, **options) -> uint8 (num, H, W, C)

`resolve(workdir)` picks the run's generator from the part folders it has (DIR/prior -> "prior", DIR/vae ->
"vae", ...): the part that makes images last in a pipeline wins (a prior over a VQGAN's tokens, a
diffusion model over a VAE's latents). `check_options(name, options)` turns an option the generator does
not take (e.g. --top_k for a VAE) into a one-line error. A new generator adds a function here and its
part folder to PARTS.
"""
from __future__ import annotations

import inspect
import os
from typing import Callable

import numpy as np

from vqgan_jax.errors import UserError
from vqgan_jax.train import runs


def _prior(workdir: str, num: int, seed: int = 0, batch_size: int = 16, *, temperature=None, top_k=None,
           top_p=None, cfg_scale=None, label=None, random_first_token: bool = False,
           progress: bool = False) -> np.ndarray:
    """The VQGAN + GPT-2 prior (`sampling.draw.draw_samples`)."""
    from vqgan_jax.sampling import draw
    return draw.draw_samples(workdir, num=num, seed=seed, batch_size=batch_size, temperature=temperature,
                             top_k=top_k, top_p=top_p, cfg_scale=cfg_scale, label=label,
                             random_first_token=random_first_token, progress=progress)


def _vae(workdir: str, num: int, seed: int = 0, batch_size: int = 16, *, temperature=None,
         label=None) -> np.ndarray:
    """The VAE, decoding z ~ N(0, temperature^2 I) (`sampling.vae.generate`)."""
    from vqgan_jax.sampling import vae
    return vae.generate(workdir, num, seed, batch_size, temperature=temperature, label=label)


def _diffusion(workdir: str, num: int, seed: int = 0, batch_size: int = 16, *, sampler=None, steps=None,
               eta=None, label=None, cfg_scale=None, progress: bool = False) -> np.ndarray:
    """The latent-diffusion prior decoded by its stage 1 (`sampling.latent_diffusion.generate`); None takes
    the run's defaults (diffusion.sampler, sample_steps, eta, cfg_scale)."""
    from vqgan_jax.sampling import latent_diffusion
    return latent_diffusion.generate(workdir, num, seed, batch_size, sampler=sampler, steps=steps, eta=eta,
                                     label=label, cfg_scale=cfg_scale, progress=progress)


def _dcgan(workdir: str, num: int, seed: int = 0, batch_size: int = 16, *, label=None) -> np.ndarray:
    """The DCGAN's generator with its stored BatchNorm statistics (`sampling.dcgan.generate`)."""
    from vqgan_jax.sampling import dcgan
    return dcgan.generate(workdir, num, seed, batch_size, label=label)


GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "prior": _prior,
    "diffusion": _diffusion,
    "dcgan": _dcgan,
    "vae": _vae,
}
# generator name -> the part folder that holds it, in the order `resolve` tries them: the GPT-2 prior
# first (a run with both priors samples the GPT-2 unless --prior diffusion), then the other generators.
PARTS = {"prior": "prior", "diffusion": "diffusion", "dcgan": "dcgan", "vae": "vae"}


def _part(name: str) -> str:
    return PARTS.get(name, name)


def available(workdir: str) -> list[str]:
    """The registered generators whose part folder exists in workdir, in `resolve`'s order."""
    order = [n for n in PARTS if n in GENERATORS] + [n for n in GENERATORS if n not in PARTS]
    return [n for n in order if os.path.isdir(runs.stage_dir(workdir, _part(n)))]


def resolve(workdir: str, name: str | None = None) -> str | None:
    """The generator to use for a run folder: `name` when given (it must be registered and its part folder
    must exist), else the first of `available(workdir)`, or None when the folder holds no generator."""
    if name is not None:
        if name not in GENERATORS:
            raise UserError(f"unknown generator {name!r}: use one of {', '.join(sorted(GENERATORS))}")
        if not os.path.isdir(runs.stage_dir(workdir, _part(name))):
            raise UserError(f"{workdir} has no {_part(name)}/ part: train the {name} generator first")
        return name
    found = available(workdir)
    return found[0] if found else None


def check_options(name: str, options: dict) -> None:
    """Raises UserError for an option `GENERATORS[name]` does not take (sample.py and evaluate pass only the
    flags a user set, so a --top_k given to a VAE is reported, never ignored)."""
    params = inspect.signature(GENERATORS[name]).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    known = {k for k, p in params.items() if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"the {name} generator does not take {', '.join('--' + u for u in unknown)} "
                        f"(it takes {', '.join('--' + k for k in sorted(known)) or 'no options'})")


def generate(workdir: str, name: str, num: int, seed: int = 0, batch_size: int = 16, **options) -> np.ndarray:
    """`GENERATORS[name](workdir, num, seed, batch_size, **options)` after `check_options`; uint8 (num, H, W, C)."""
    check_options(name, options)
    if num <= 0:
        raise UserError(f"--num must be positive, got {num}")
    images = np.asarray(GENERATORS[name](workdir, num, seed, batch_size, **options))
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != num:
        raise ValueError(f"generator {name} returned {images.dtype} {images.shape}, not uint8 ({num}, H, W, C)")
    return images


def write_samples(workdir: str, out_dir: str, name: str, num: int, seed: int = 0, batch_size: int = 16,
                  **options) -> list[str]:
    """`generate(...)` written as out_dir/sample_NNNNN.png + out_dir/grid.png; returns the single images' paths."""
    from vqgan_jax.viz import images as images_lib
    x = generate(workdir, name, num, seed, batch_size, **options)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)  # PNG grids are RGB
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for i, image in enumerate(x):
        paths.append(os.path.join(out_dir, f"sample_{i:05d}.png"))
        images_lib.save_png(paths[-1], image)
    images_lib.write_grid(x, os.path.join(out_dir, "grid.png"))
    return paths
