"""taming-transformers' YAML model configs <-> vqgan_jax config sections.

A taming config names its classes by import path (`model.target: taming.models.vqgan.VQModel`) and nests the
architecture in `model.params.ddconfig`. `sections_from_yaml` reads one (never importing anything it names)
into the values of our `model`, `quantizer`, `disc`, `loss` and `data` sections; `yaml_from_sections` writes
the reverse for `convert to-taming`.

What maps, and how:
- ddconfig ch, ch_mult, num_res_blocks, attn_resolutions, z_channels, dropout -> model.*; resolution ->
  data.image_size (taming places attention by the level's size counted down from `resolution`; ours by the
  size of the array, the same at that image size). double_z must be false (that is a KL autoencoder).
- n_embed -> quantizer.num_codes, embed_dim -> quantizer.code_dim. VQModel builds VectorQuantizer2 with
  beta=0.25 and legacy=True, which weighs the *codebook* term by beta: loss = ||sg(z_q) - z||^2 +
  0.25 ||z_q - sg(z)||^2. vqgan_jax puts beta on the commitment term (codebook + beta * commit). By default the
  import keeps our convention (beta 0.25 on the commitment term); `legacy_beta=True` reproduces taming's loss
  exactly instead: beta = 1/0.25 = 4 and loss.codebook_weight times 0.25 (the same sum).
- `remap` (a used-codes .npy) only renames the ids taming *returns*: it quantizes against the whole codebook,
  so reconstructions are unchanged. The import keeps all codes; our ids are full-codebook ids (taming's
  remapped id r is used[r]).
- lossconfig VQLPIPSWithDiscriminator: disc_ndf, disc_num_layers -> disc.ndf, disc.n_layers, norm 'affine'
  (BatchNorm's eval-mode map or ActNorm, folded exactly); disc_start, disc_weight (times disc_factor),
  codebook_weight, pixelloss_weight, perceptual_weight, disc_loss (hinge | vanilla -> non_saturating) ->
  loss.*. Any other loss (DummyLoss, ...) means no discriminator in the checkpoint.
- GumbelVQ, EMAVQ and every other model class are refused with a one-line UserError.
"""
from __future__ import annotations

import os
from typing import Any

from vqgan_jax.errors import UserError

VQMODEL = "taming.models.vqgan.VQModel"
DISC_LOSS = "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"
TAMING_BETA = 0.25  # VQModel's hard-coded VectorQuantizer2(beta=0.25, legacy=True)
_REFUSED = {
    "taming.models.vqgan.GumbelVQ": "a Gumbel-softmax quantizer (GumbelVQ) model: vqgan_jax has no Gumbel quantizer "
                                    "(its codes come from logits, not nearest neighbours); use a VQModel checkpoint",
    "taming.models.vqgan.EMAVQ": "an EMAVQ model: convert a VQModel checkpoint instead",
}


def read_yaml(path: str) -> dict:
    """A YAML file as plain data (yaml.safe_load: no tags, no objects). UserError when missing or malformed."""
    import yaml
    if not os.path.isfile(path):
        raise UserError(f"config {path} not found")
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a taming model config (expected a mapping with a `model` key)")
    return data


def _get(d: dict, key: str, path: str, where: str) -> Any:
    if not isinstance(d, dict) or key not in d:
        raise UserError(f"{path} has no {where}{key}: is it a taming-transformers model config?")
    return d[key]


def sections_from_yaml(data: dict, path: str, *, legacy_beta: bool = False) -> tuple[dict, dict]:
    """taming YAML (as read by `read_yaml`) -> (sections, info).

    sections: {'model': {...}, 'quantizer': {...}, 'disc': {...}, 'loss': {...}, 'data': {'image_size'}}, each
    holding only the keys it sets (merged into a full config by the caller). info: {'has_disc': bool,
    'disc_actnorm': bool, 'remap': str | None, 'notes': [str]} (what a person should know about the import).
    """
    model = _get(data, "model", path, "")
    target = str(_get(model, "target", path, "model."))
    if target in _REFUSED:
        raise UserError(f"{path} describes {_REFUSED[target]}")
    if target != VQMODEL:
        raise UserError(f"{path}: model.target {target} is not supported; only {VQMODEL} checkpoints convert")
    params = _get(model, "params", path, "model.")
    dd = _get(params, "ddconfig", path, "model.params.")
    for key, want in (("double_z", False), ("in_channels", 3), ("out_ch", 3)):
        if key in dd and dd[key] != want:
            raise UserError(f"{path}: ddconfig.{key}={dd[key]} is not supported (a VQGAN has {key}={want})")
    try:
        sections = {
            "model": {"ch": int(dd["ch"]), "ch_mult": tuple(int(m) for m in dd["ch_mult"]),
                      "num_res_blocks": int(dd["num_res_blocks"]),
                      "attn_resolutions": tuple(int(r) for r in dd.get("attn_resolutions", ())),
                      "z_channels": int(dd["z_channels"]), "dropout": float(dd.get("dropout", 0.0))},
            "quantizer": {"num_codes": int(params["n_embed"]), "code_dim": int(params["embed_dim"]),
                          "beta": TAMING_BETA, "l2_normalize": False, "ema": False},
            "data": {"image_size": int(dd["resolution"])},
            "loss": {"rec_type": "l1"},
        }
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: model.params / ddconfig lack or misspell a value ({type(e).__name__}: {e})") \
            from None
    notes = []
    if legacy_beta:
        sections["quantizer"]["beta"] = 1.0 / TAMING_BETA
        notes.append("quantizer: taming's legacy loss kept exactly (beta=4 on the commitment term, "
                     "loss.codebook_weight x 0.25)")
    remap = params.get("remap")
    if remap:
        notes.append(f"quantizer: remap={remap} ignored; ids are full-codebook ids (taming's id r is used[r])")

    loss_cfg = params.get("lossconfig") or {}
    info = {"has_disc": False, "disc_actnorm": False, "remap": remap, "notes": notes}
    if loss_cfg.get("target") == DISC_LOSS:
        lp = loss_cfg.get("params") or {}
        if lp.get("disc_conditional", False):
            raise UserError(f"{path}: a class-conditional discriminator (disc_conditional: true) is not supported")
        if int(lp.get("disc_in_channels", 3)) != 3:
            raise UserError(f"{path}: disc_in_channels={lp['disc_in_channels']} is not supported (3 only)")
        kind = str(lp.get("disc_loss", "hinge"))
        if kind not in ("hinge", "vanilla"):
            raise UserError(f"{path}: disc_loss {kind!r} is not supported (hinge | vanilla)")
        info.update(has_disc=True, disc_actnorm=bool(lp.get("use_actnorm", False)))
        sections["disc"] = {"ndf": int(lp.get("disc_ndf", 64)), "n_layers": int(lp.get("disc_num_layers", 3)),
                            "norm": "affine"}
        codebook_weight = float(lp.get("codebook_weight", 1.0)) * (TAMING_BETA if legacy_beta else 1.0)
        sections["loss"].update(
            disc_start=int(lp.get("disc_start", 0)),
            disc_weight=float(lp.get("disc_weight", 1.0)) * float(lp.get("disc_factor", 1.0)),
            codebook_weight=codebook_weight, rec_weight=float(lp.get("pixelloss_weight", 1.0)),
            perceptual_weight=float(lp.get("perceptual_weight", 1.0)),
            disc_loss="hinge" if kind == "hinge" else "non_saturating")
    elif legacy_beta:
        sections["loss"]["codebook_weight"] = TAMING_BETA
    return sections, info


def yaml_from_sections(config: Any) -> dict:
    """A taming YAML dict (VQModel + VQLPIPSWithDiscriminator) for a vqgan_jax config (ConfigDict or dict)."""
    m, q, d, loss = config["model"], config["quantizer"], config["disc"], config["loss"]
    lossconfig = {"target": DISC_LOSS, "params": {
        "disc_conditional": False, "disc_in_channels": 3, "disc_start": int(loss["disc_start"]),
        "disc_weight": float(loss["disc_weight"]), "codebook_weight": float(loss["codebook_weight"]),
        "pixelloss_weight": float(loss["rec_weight"]), "perceptual_weight": float(loss["perceptual_weight"]),
        "disc_ndf": int(d["ndf"]), "disc_num_layers": int(d["n_layers"]), "use_actnorm": False,
        "disc_loss": "hinge" if loss["disc_loss"] == "hinge" else "vanilla"}}
    return {"model": {"base_learning_rate": 4.5e-6, "target": VQMODEL, "params": {
        "embed_dim": int(q["code_dim"]), "n_embed": int(q["num_codes"]),
        "ddconfig": {"double_z": False, "z_channels": int(m["z_channels"]),
                     "resolution": int(config["data"]["image_size"]), "in_channels": 3, "out_ch": 3,
                     "ch": int(m["ch"]), "ch_mult": [int(c) for c in m["ch_mult"]],
                     "num_res_blocks": int(m["num_res_blocks"]),
                     "attn_resolutions": [int(r) for r in m["attn_resolutions"]], "dropout": float(m["dropout"])},
        "lossconfig": lossconfig}}}
