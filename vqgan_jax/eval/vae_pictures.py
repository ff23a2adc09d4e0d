"""The VAE's pictures of its held-out latents: the latent map (`sample.py --latent_map`, `viz.latent_map`) and
interpolation between class means (`sample.py --interpolate_classes A,B`)."""
from __future__ import annotations

import numpy as np

from vqgan_jax.errors import UserError


def write_latent_map(workdir: str, out_png: str, *, data_dir: str | None = None, max_images: int | None = 2000) -> str:
    """The latent map of a VAE run (`viz.latent_map`): posterior means of its held-out images (the run's own
    split, or data_dir's), coloured by class. Returns out_png."""
    from vqgan_jax.eval import suite
    from vqgan_jax.sampling import vae as vae_sampling
    from vqgan_jax.train import loading
    from vqgan_jax.viz import latent_map
    vae = loading.load_vae(workdir)
    images, labels = suite.load_split(suite._data_config(workdir, data_dir, "vae"), "eval", max_images)
    if len(images) < 2:
        raise UserError("the latent map needs at least 2 held-out images")
    means = vae_sampling.encode_means(vae, images, labels if vae.model.num_classes else None)
    return latent_map.latent_map(means, labels, out_png)


def write_class_interpolation(workdir: str, class_a: int, class_b: int, out_png: str, *, steps: int = 10,
                              spherical: bool = False, data_dir: str | None = None,
                              max_images: int | None = 2000) -> str:
    """A strip decoded between the mean posterior means of two classes' held-out images -> out_png. A
    conditional VAE decodes the first half with class_a's label and the second with class_b's."""
    from vqgan_jax.eval import suite
    from vqgan_jax.sampling import vae as vae_sampling
    from vqgan_jax.train import loading
    from vqgan_jax.viz import images as images_lib
    vae = loading.load_vae(workdir)
    images, labels = suite.load_split(suite._data_config(workdir, data_dir, "vae"), "eval", max_images)
    means = vae_sampling.class_means(vae, images, labels)
    missing = [c for c in (class_a, class_b) if c not in means]
    if missing:
        raise UserError(f"no held-out images of class {missing[0]} (classes present: {sorted(means)[:20]})")
    if vae.model.num_classes:
        half = steps // 2
        t = np.linspace(0.0, 1.0, steps)
        path = (vae_sampling.slerp if spherical else vae_sampling.lerp)(means[class_a], means[class_b], t)
        lab = np.where(np.arange(steps) < half, class_a, class_b).astype(np.int32)
        strip = images_lib.grid(images_lib.to_uint8(vae_sampling.decode(vae, path, lab)), ncols=steps)
    else:
        strip = vae_sampling.latent_strip(vae, means[class_a], means[class_b], steps, spherical=spherical)
    images_lib.save_png(out_png, strip)
    return out_png
