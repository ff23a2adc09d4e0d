"""The VAE's latent map for `sample.py --latent_map`: held-out posterior means in 2-D (`viz.latent_map`)."""
from __future__ import annotations

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
