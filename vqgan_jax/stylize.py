"""Neural style transfer from the command line (the library part is `vqgan_jax.trainers.style`).

    python -m vqgan_jax.stylize --content photo.jpg --style painting.jpg --out styled.png \
        [--size 512] [--steps 300] [--style_weight 1e6] [--content_weight 1] [--tv_weight 1e-4] \
        [--optimizer lbfgs|adam] [--init content|noise] [--scales 2] [--strip] [--overwrite]
    python -m vqgan_jax.stylize --content photos/ --style painting.jpg --out styled/   # a folder, batched
    python -m vqgan_jax.stylize --content photo.jpg --style painting.jpg --out sweep.png --sweep 1e4,1e5,1e6

A single content image keeps its aspect ratio (long side --size); a folder's images are centre-cropped
squares of --size; the style image is scaled to the content's short side at every scale. A folder is
stylised as one batch sharded over the devices. --strip also writes
OUT_strip.png: the image every --steps/8 steps, side by side. --sweep writes one grid, one image per style
weight. Bad input (missing or unreadable images, an empty folder, a size too small for VGG16, an output
that exists without --overwrite) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys

STRIP_FRAMES = 8


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m vqgan_jax.stylize", description=__doc__.split("\n")[0])
    p.add_argument("--content", required=True, help="content image file, or a folder of them")
    p.add_argument("--style", required=True, help="style image file")
    p.add_argument("--out", required=True, help="output PNG (a folder when --content is a folder)")
    p.add_argument("--size", type=int, default=512, help="long side (single image) or square side (folder), px")
    p.add_argument("--steps", type=int, default=300, help="optimisation steps per scale")
    p.add_argument("--style_weight", type=float, default=1e6)
    p.add_argument("--content_weight", type=float, default=1.0)
    p.add_argument("--tv_weight", type=float, default=1e-4)
    p.add_argument("--optimizer", default="lbfgs", help="lbfgs | adam")
    p.add_argument("--lr", type=float, default=0.02, help="Adam's step size on [0, 1] pixels")
    p.add_argument("--init", default="content", help="content | noise")
    p.add_argument("--scales", type=int, default=1, help="coarse-to-fine scales (2: half size first)")
    p.add_argument("--content_layer", default="relu4_2")
    p.add_argument("--style_layers", default="relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    p.add_argument("--seed", type=int, default=0, help="noise for --init noise")
    p.add_argument("--strip", action="store_true", help="also write OUT_strip.png (how the image forms)")
    p.add_argument("--sweep", default="", help="comma-separated style weights: one grid PNG at --out")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p.parse_args(argv)


def _outputs(args, names: list[str]) -> list[str]:
    """Every file this call writes (checked for existence before any work)."""
    if args.sweep:
        return [args.out]
    paths = [os.path.join(args.out, n) for n in names] if os.path.isdir(args.content) else [args.out]
    if args.strip:
        paths += [os.path.splitext(p)[0] + "_strip.png" for p in paths]
    return paths


def stylize(args, printer=print) -> list[str]:
    """Runs the command; returns the paths written."""
    import numpy as np

    from vqgan_jax.errors import UserError
    from vqgan_jax.data import style_images as style_io
    from vqgan_jax.trainers import style as st
    from vqgan_jax.viz import style as style_viz

    settings = st.StyleSettings(
        steps=args.steps, style_weight=args.style_weight, content_weight=args.content_weight,
        tv_weight=args.tv_weight, optimizer=args.optimizer, lr=args.lr, init=args.init,
        content_layer=args.content_layer, style_layers=tuple(x for x in args.style_layers.split(",") if x),
        seed=args.seed).check()
    sizes = st.scale_sizes(args.size, args.scales)
    is_folder = os.path.isdir(args.content)
    if is_folder:
        files = style_io.list_images(args.content)
        content = np.stack([style_io.load_square(f, args.size) for f in files])
        names = [os.path.splitext(os.path.basename(f))[0] + ".png" for f in files]
    else:
        content = style_io.load(args.content, args.size)[None]
        names = [os.path.basename(args.out)]
    style_full = style_io.load(args.style, 2 * args.size)[None]  # room to scale it down to each scale
    weights = [float(w) for w in args.sweep.split(",") if w.strip()] if args.sweep else [settings.style_weight]
    if args.sweep and is_folder:
        raise UserError("--sweep takes one content image, not a folder")
    outputs = _outputs(args, names)
    existing = [p for p in outputs if os.path.exists(p)]
    if existing and not args.overwrite:
        raise UserError(f"{existing[0]} exists: pass --overwrite to replace it, or choose another --out")
    h, w = content.shape[1:3]
    shapes = [(max(1, round(h * s / max(h, w))), max(1, round(w * s / max(h, w)))) for s in sizes]
    for i, shape in enumerate(shapes):
        st.check_size(*shape, f"the content image at scale {i + 1} of {len(shapes)}")

    engine = st.StyleTransfer()
    n_dev = engine.mesh.devices.size
    pad = (-len(content)) % n_dev  # whole batches over the devices: repeat the last image, drop it after
    content = np.concatenate([content, np.repeat(content[-1:], pad, axis=0)]) if pad else content
    progress = st.Progress(len(sizes) * settings.steps * len(weights), printer)
    results, strips = [], []
    for k, weight in enumerate(weights):
        s = settings if not args.sweep else st.StyleSettings(**{**settings.__dict__, "style_weight": weight})
        x, frames = None, []
        for i, shape in enumerate(shapes):
            c = st.resize(content, *shape)
            ss = style_io.fit_short_side(style_full, min(shape))  # the style's scale follows the content's
            start = None if x is None else st.resize(x, *shape)
            label = ((f"[weight {weight:g}] " if args.sweep else "")
                     + f"scale {i + 1}/{len(shapes)} {shape[0]}x{shape[1]}")
            base = (k * len(shapes) + i) * s.steps
            every = max(1, s.steps // STRIP_FRAMES) if args.strip else max(1, s.steps // 10)

            def on_chunk(step, images, terms, label=label, base=base):
                progress(label, step, terms, base)
                if args.strip:
                    frames.append(np.clip(images, 0, 1))

            x, _ = engine.run(c, ss, s, start=start, steps_per_call=every, on_chunk=on_chunk)
        results.append(x[: len(x) - pad])
        strips.append([f[: len(f) - pad] for f in frames])
    return style_viz.write_outputs(args, outputs, names, results, strips, weights)


def main(argv=None) -> int:
    from vqgan_jax import cli
    cli.prepare_process()  # before jax is imported (XLA flags, compilation cache)
    args = parse_args(argv)
    cli.quiet_logs()
    return cli.run_cli(lambda: [print(f"wrote {p}") for p in stylize(args)])


if __name__ == "__main__":
    sys.exit(main())
