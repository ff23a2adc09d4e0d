"""Pretrained VQGANs in and out: taming-transformers and dalle-mini checkpoints as vqgan_jax run folders.

    python -m vqgan_jax.convert taming --ckpt last.ckpt --config model.yaml --workdir runs/imagenet_f16
    python -m vqgan_jax.convert dalle-mini --model_dir vqgan_imagenet_f16_16384/ --workdir runs/dalle_f16
    python -m vqgan_jax.convert to-taming --workdir runs/ft --out ft.ckpt      # also writes ft.yaml

An import writes an ordinary run folder, DIR/vqgan/{config.json, checkpoints/0/, converted_from.json}: the
architecture read from the source's config, the weights as a step-0 training state (fresh optimizer moments),
every other setting from --base_config (default configs/base.py). So `sample.py --workdir DIR --reconstruct`,
evaluation, token encoding and `train.py --config ... --config.init_from=DIR` (fine-tuning) work on it.
Checkpoints are read without running pickled code (`vqgan_jax.interop.torch_ckpt`); see docs/pretrained.md.
Bad input ends with one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys

from vqgan_jax.cli import prepare_process

DEFAULT_BASE_CONFIG = os.path.join("configs", "base.py")


def load_config_file(spec: str):
    """A locked config from 'path/to/config.py[:arg]': the file's get_config(arg), as train.py's --config reads
    it, or for configs/base.py (which has no get_config) get_base_config(), with apply_tiny() for ':tiny'."""
    from vqgan_jax.errors import UserError
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        raise UserError(f"base config {path} not found: run from the repository root or pass --base_config "
                        "path/to/configs/NAME.py")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(path))))  # so `from configs import base` works
    module_spec = importlib.util.spec_from_file_location("vqgan_jax_convert_base_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if hasattr(module, "get_config"):
        return module.get_config(arg) if arg else module.get_config()
    if not hasattr(module, "get_base_config") or arg not in ("", "tiny"):
        raise UserError(f"{spec} is not a vqgan_jax config file (no get_config)")
    config = module.get_base_config()
    if arg == "tiny":
        module.apply_tiny(config)
    config.lock()
    return config


def _apply(config, sections: dict) -> None:
    for section, values in sections.items():
        for key, value in values.items():
            config[section][key] = value


def _write_run(config, workdir: str, g_params, d_params, source: dict) -> str:
    """Writes DIR/vqgan (config.json, a step-0 checkpoint, converted_from.json); returns DIR/vqgan."""
    import jax
    import numpy as np
    from vqgan_jax.errors import UserError
    from vqgan_jax.train import runs
    from vqgan_jax.train.checkpoint import Checkpointer, stored_latest_step
    from vqgan_jax.trainers.vqgan import VQGANSetup

    ckpt_dir = runs.checkpoint_dir(workdir, "vqgan")
    if stored_latest_step(ckpt_dir) is not None:
        raise UserError(f"{ckpt_dir} already holds a checkpoint: convert into a new --workdir")
    setup = VQGANSetup(config)
    state = jax.device_get(setup.init_state(int(config.train.seed)))
    as_f32 = lambda tree: jax.tree.map(lambda a: np.asarray(a, np.float32), tree)  # noqa: E731
    g_params = as_f32(g_params)
    state = state.replace(g_params=g_params, ema_params=g_params if setup.ema_decay > 0 else state.ema_params,
                          d_params=as_f32(d_params) if d_params is not None else state.d_params)
    runs.write_config(workdir, "vqgan", config)
    with Checkpointer(ckpt_dir, async_save=False) as ckpt:
        ckpt.save(0, state, force=True)
    out = runs.stage_dir(workdir, "vqgan")
    with open(os.path.join(out, "converted_from.json"), "w") as f:
        json.dump(source, f, indent=2, sort_keys=True)
    return out


def convert_taming(ckpt_path: str, yaml_path: str, workdir: str, *, base_config: str = DEFAULT_BASE_CONFIG,
                   legacy_beta: bool = False) -> str:
    """A taming VQModel checkpoint + its YAML -> a run folder at `workdir`. Returns DIR/vqgan."""
    from vqgan_jax.interop import taming, taming_config, torch_ckpt
    from vqgan_jax.models import patchgan, vqgan

    sections, info = taming_config.sections_from_yaml(taming_config.read_yaml(yaml_path), yaml_path,
                                                      legacy_beta=legacy_beta)
    obj = torch_ckpt.read_checkpoint(ckpt_path)
    sd = torch_ckpt.state_dict_of(obj, ckpt_path)
    config = load_config_file(base_config)
    _apply(config, sections)
    config.name = f"taming:{os.path.basename(os.path.dirname(os.path.abspath(ckpt_path))) or 'ckpt'}"
    size = int(config.data.image_size)
    g_params = taming.vqgan_params(sd, taming.abstract_params(vqgan.from_config(config), size), ckpt_path)
    d_params, notes = None, list(info["notes"])
    if info["has_disc"] and any(k.startswith("loss.discriminator.") for k in sd):
        disc = patchgan.from_config(config)
        d_params = taming.disc_params(sd, taming.abstract_params(disc, size), int(config.disc.n_layers), ckpt_path)
        notes.append(f"discriminator: {'ActNorm' if info['disc_actnorm'] else 'BatchNorm (eval-mode statistics)'}"
                     " folded into disc.norm='affine'")
    else:
        notes.append("discriminator: none in the checkpoint; a fresh one (disc settings of the base config)")
    source = {"format": "taming", "ckpt": os.path.abspath(ckpt_path), "config": os.path.abspath(yaml_path),
              "global_step": obj.get("global_step") if isinstance(obj, dict) else None, "notes": notes}
    out = _write_run(config, workdir, g_params, d_params, source)
    for note in notes:
        print(note)
    return out


def convert_dalle_mini(model_dir: str, workdir: str, *, base_config: str = DEFAULT_BASE_CONFIG) -> str:
    """dalle-mini's Flax VQGAN (config.json + flax_model.msgpack) -> a run folder. Returns DIR/vqgan."""
    from vqgan_jax.interop import dalle_mini
    from vqgan_jax.models import vqgan

    sections = dalle_mini.sections_from_config(model_dir)
    config = load_config_file(base_config)
    _apply(config, sections)
    config.name = f"dalle-mini:{os.path.basename(os.path.abspath(model_dir))}"
    abstract = dalle_mini.abstract_params(vqgan.from_config(config), int(config.data.image_size))
    g_params = dalle_mini.vqgan_params(model_dir, abstract)
    source = {"format": "dalle-mini", "model_dir": os.path.abspath(model_dir),
              "notes": ["discriminator: none in the checkpoint; a fresh one (disc settings of the base config)"]}
    return _write_run(config, workdir, g_params, None, source)


def export_taming(workdir: str, out: str) -> tuple[str, str]:
    """DIR/vqgan's weights (EMA weights when the run keeps them) and, with disc.norm='affine', its
    discriminator -> a taming .ckpt (torch-loadable) and its YAML beside it. Returns (ckpt, yaml) paths."""
    import collections

    import yaml

    from vqgan_jax.errors import UserError
    from vqgan_jax.interop import taming, taming_config, torch_ckpt
    from vqgan_jax.models import patchgan
    from vqgan_jax.nn.layers import num_groups_for
    from vqgan_jax.train import loading, parallel, runs
    from vqgan_jax.train.checkpoint import Checkpointer, abstract_like

    loaded = loading.load_vqgan(workdir, ops="plain")
    config = loaded.config
    q = config.quantizer
    if bool(q.l2_normalize):
        raise UserError("quantizer.l2_normalize=True has no taming counterpart (taming's codes are not normalised)")
    widths = {int(config.model.ch) * int(m) for m in config.model.ch_mult}
    if any(num_groups_for(w) != 32 for w in widths):
        raise UserError(f"taming's GroupNorm needs widths that are multiples of 32; this model has {sorted(widths)}")
    params = jax_to_numpy(loaded.variables["params"])
    sd = taming.vqgan_state_dict(params)
    if bool(q.ema):
        sd["quantize.embedding.weight"] = jax_to_numpy(loaded.variables["vq_stats"]["quantize"]["codebook"])
    notes = []
    if config.disc.norm == "affine":
        disc = patchgan.from_config(config)
        abstract = {"d_params": taming.abstract_params(disc, int(config.data.image_size))}
        with Checkpointer(runs.checkpoint_dir(workdir, "vqgan"), async_save=False) as ckpt:
            d = ckpt.restore_parts(abstract_like(abstract, parallel.replicated(loaded.mesh)), loaded.step)
        sd.update(taming.disc_state_dict(jax_to_numpy(d["d_params"]), int(config.disc.n_layers)))
    else:
        notes.append(f"discriminator not exported: disc.norm={config.disc.norm!r} has no taming counterpart")
    torch_ckpt.write_checkpoint(out, {"epoch": 0, "global_step": int(loaded.step),
                                      "state_dict": collections.OrderedDict(sorted(sd.items()))})
    yaml_path = os.path.splitext(out)[0] + ".yaml"
    with open(yaml_path, "w") as f:
        yaml.safe_dump(taming_config.yaml_from_sections(config), f, sort_keys=False)
    for note in notes:
        print(note)
    return out, yaml_path


def jax_to_numpy(tree):
    import jax
    import numpy as np
    return jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float32), tree)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m vqgan_jax.convert", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("taming", help="a taming-transformers VQModel .ckpt + its YAML -> a run folder")
    t.add_argument("--ckpt", required=True, help="the Lightning checkpoint (e.g. last.ckpt)")
    t.add_argument("--config", required=True, help="its taming YAML (e.g. model.yaml / *-project.yaml)")
    t.add_argument("--workdir", required=True, help="the run folder to write (DIR/vqgan)")
    t.add_argument("--base_config", default=DEFAULT_BASE_CONFIG,
                   help="vqgan_jax config file[:preset] for the settings a taming YAML lacks (data, optim, train)")
    t.add_argument("--legacy_beta", action="store_true",
                   help="keep taming's legacy quantizer loss exactly (beta on the codebook term; see docs)")
    d = sub.add_parser("dalle-mini", help="dalle-mini's Flax VQGAN folder (config.json + flax_model.msgpack)")
    d.add_argument("--model_dir", required=True)
    d.add_argument("--workdir", required=True)
    d.add_argument("--base_config", default=DEFAULT_BASE_CONFIG)
    e = sub.add_parser("to-taming", help="a run folder's VQGAN -> a taming .ckpt and .yaml")
    e.add_argument("--workdir", required=True)
    e.add_argument("--out", required=True, help="the .ckpt to write (the YAML goes beside it)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from vqgan_jax import cli
    cli.quiet_logs()

    def go():
        if args.command == "taming":
            out = convert_taming(args.ckpt, args.config, args.workdir, base_config=args.base_config,
                                 legacy_beta=args.legacy_beta)
        elif args.command == "dalle-mini":
            out = convert_dalle_mini(args.model_dir, args.workdir, base_config=args.base_config)
        else:
            out = ", ".join(export_taming(args.workdir, args.out))
        print(f"wrote {out}")

    return cli.run_cli(go)


if __name__ == "__main__":
    prepare_process()
    raise SystemExit(main())
