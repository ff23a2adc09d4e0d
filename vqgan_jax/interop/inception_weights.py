"""The FID Inception's weights: our `.npz` format, its checks, and the converter from pytorch-fid's `.pth`.

Our weights file is an `.npz` of `models.inception`'s variables under '/'-joined keys, float32.
`python -m vqgan_jax.inception download --out FILE.npz` (needs torch, once) fetches pytorch-fid's .pth,
checks its hash and converts it; `convert --pth FILE` converts a .pth fetched by other means.
"""
import argparse
import functools
import hashlib
import os
import shutil
import urllib.request

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vqgan_jax.errors import UserError
from vqgan_jax.models.inception import Inception

PTH_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
           "pt_inception-2015-12-05-6726825d.pth")
PTH_NAME = "pt_inception-2015-12-05-6726825d.pth"
PTH_SHA256_PREFIX = "6726825d"  # torch-hub names files <name>-<first 8 hex digits of sha256>.pth
_HOW_TO_GET = ("convert the pytorch-fid weights with `python -m vqgan_jax.inception download --out FILE.npz` "
               "(or `python -m vqgan_jax.inception convert --pth pt_inception-2015-12-05-6726825d.pth "
               "--out FILE.npz`)")


@functools.lru_cache(maxsize=1)
def expected_shapes() -> dict[str, tuple[int, ...]]:
    """{'params/Conv2d_1a_3x3/conv/kernel': (3, 3, 3, 32), ...} for every variable of `Inception`."""
    images = jax.ShapeDtypeStruct((1, 299, 299, 3), jnp.float32)
    tree = jax.eval_shape(Inception().init, jax.random.key(0), images)
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(dict(tree), sep="/").items()}


def check_flat_weights(flat: dict, source: str) -> None:
    """Raises UserError (one line naming `source`) unless `flat` has exactly Inception's keys and shapes."""
    want = expected_shapes()
    missing = sorted(set(want) - set(flat))
    extra = sorted(set(flat) - set(want))
    if missing:
        raise UserError(f"{source} lacks Inception weight {missing[0]} ({len(missing)} missing); {_HOW_TO_GET}")
    if extra:
        raise UserError(f"{source} has unexpected key {extra[0]} ({len(extra)} unexpected); {_HOW_TO_GET}")
    for key, shape in want.items():
        if tuple(np.shape(flat[key])) != shape:
            raise UserError(f"{source}: {key} has shape {tuple(np.shape(flat[key]))}, expected {shape}; "
                            f"{_HOW_TO_GET}")
        if np.asarray(flat[key]).dtype.kind != "f":
            raise UserError(f"{source}: {key} is not a float array; {_HOW_TO_GET}")


def load_inception_params(path) -> dict:
    """Reads our Inception `.npz` and checks every key and shape against `Inception`.

    Args:
      path: str or os.PathLike of an npz written by `convert_pytorch_fid` (or `make_random_weights`).
    Returns:
      {'params': ..., 'batch_stats': ...} nested dicts of float32 jnp arrays, for `Inception().apply`.
    Raises:
      UserError: the file is missing or unreadable, or a key is missing, unexpected or wrongly shaped.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"Inception weights {path} not found; {_HOW_TO_GET}")
    try:
        with np.load(path, allow_pickle=False) as z:
            flat = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:  # not an npz, or a truncated one
        raise UserError(f"cannot read Inception weights {path} ({e}); {_HOW_TO_GET}") from e
    check_flat_weights(flat, path)
    return traverse_util.unflatten_dict({k: jnp.asarray(v, jnp.float32) for k, v in flat.items()}, sep="/")


def save_npz(path, flat: dict) -> str:
    """Writes {key: array} to `path` atomically (a temp file, then rename). Returns the path."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
        np.savez(f, **flat)
    os.replace(tmp, path)
    return path


def make_random_weights(path, seed: int = 0) -> str:
    """Writes an npz of random Inception weights (for tests): He-scaled kernels, BatchNorm scale 1, bias 0,
    running mean 0 and var 1, so activations stay finite and of order one. About 95 MB. Returns path."""
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in expected_shapes().items():
        leaf = key.rsplit("/", 1)[-1]
        if leaf == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            flat[key] = (rng.standard_normal(shape, np.float32) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        elif leaf in ("scale", "var"):
            flat[key] = np.ones(shape, np.float32)
        else:  # bias, mean
            flat[key] = np.zeros(shape, np.float32)
    return save_npz(path, flat)


def torch_state_dict_to_npz_dict(state_dict: dict) -> dict[str, np.ndarray]:
    """pytorch-fid's state dict (name -> numpy array) -> our flat npz dict of float32 arrays.

    BatchNorm's `num_batches_tracked` counters are dropped. Raises UserError on a key that follows no rule,
    or when the result misses a key or has a wrong shape (never a partial conversion).
    """
    leaf_rules = {  # (module kind, torch name) -> (collection, our name, transpose)
        ("conv", "weight"): ("params", "kernel", (2, 3, 1, 0)),  # OIHW -> HWIO
        ("bn", "weight"): ("params", "scale", None),
        ("bn", "bias"): ("params", "bias", None),
        ("bn", "running_mean"): ("batch_stats", "mean", None),
        ("bn", "running_var"): ("batch_stats", "var", None),
        ("fc", "weight"): ("params", "kernel", (1, 0)),          # (out, in) -> (in, out)
        ("fc", "bias"): ("params", "bias", None),
    }
    flat = {}
    for key, value in state_dict.items():
        *modules, name = key.split(".")
        if name == "num_batches_tracked":
            continue
        collection, leaf, axes = leaf_rules.get((modules[-1] if modules else "", name), ("", "", None))
        ours = "/".join([collection, *modules, leaf])
        if ours not in expected_shapes():
            raise UserError(f"state dict key {key} is not part of pytorch-fid's Inception; {_HOW_TO_GET}")
        array = np.asarray(value, np.float32)
        flat[ours] = np.ascontiguousarray(
            array.transpose(axes) if axes is not None and array.ndim == len(axes) else array)
    check_flat_weights(flat, "the pytorch-fid state dict")
    return flat


def file_sha256(path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_pth_hash(path, remove_if_wrong: bool = False) -> None:
    """Raises UserError unless `path` exists and its sha256 starts with 6726825d (pytorch-fid's file);
    with remove_if_wrong a file of another hash is deleted first (a broken download)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} not found; download {PTH_URL}")
    digest = file_sha256(path)
    if not digest.startswith(PTH_SHA256_PREFIX):
        if remove_if_wrong:
            os.remove(path)
        raise UserError(f"{path} has sha256 {digest[:16]}..., not pytorch-fid's {PTH_SHA256_PREFIX}...; "
                        f"download {PTH_URL} again")


def _import_torch():
    try:
        import torch  # noqa: PLC0415 - only the one-off conversion needs torch
    except ImportError as e:
        raise UserError("converting pytorch-fid's .pth weights needs torch: pip install torch") from e
    return torch


def convert_pytorch_fid(pth_path, out_npz) -> str:
    """Converts pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` to our npz (after a hash check).

    Returns out_npz. Raises UserError on a missing or foreign file, a missing torch, or a bad state dict.
    """
    check_pth_hash(pth_path)
    torch = _import_torch()
    state = torch.load(os.fspath(pth_path), map_location="cpu", weights_only=True)
    flat = torch_state_dict_to_npz_dict({k: v.detach().cpu().numpy() for k, v in state.items()})
    save_npz(out_npz, flat)
    load_inception_params(out_npz)  # read back what was written
    return os.fspath(out_npz)


def download_pytorch_fid(dest_dir, out_npz=None, timeout: float = 60.0) -> str:
    """Downloads pytorch-fid's weights into dest_dir (kept), checks the hash and converts them.

    Args:
      dest_dir: folder for the .pth. out_npz: the npz to write (default dest_dir/<pth name>.npz).
      timeout: seconds of network silence before giving up.
    Returns:
      The npz path.
    """
    _import_torch()  # fail before a 95 MB download, not after
    dest_dir = os.fspath(dest_dir)
    os.makedirs(dest_dir, exist_ok=True)
    pth = os.path.join(dest_dir, PTH_NAME)
    if not os.path.isfile(pth):
        part = pth + ".part"
        try:
            with urllib.request.urlopen(PTH_URL, timeout=timeout) as response, open(part, "wb") as f:
                shutil.copyfileobj(response, f, 1 << 20)
        except OSError as e:  # URLError, timeouts and HTTP errors are OSErrors
            raise UserError(f"cannot download {PTH_URL} ({e}); fetch it by hand and run "
                            f"`python -m vqgan_jax.inception convert --pth FILE --out FILE.npz`") from e
        check_pth_hash(part, remove_if_wrong=True)  # only a verified file takes the final name
        os.replace(part, pth)
    out_npz = out_npz or os.path.join(dest_dir, PTH_NAME.replace(".pth", ".npz"))
    return convert_pytorch_fid(pth, out_npz)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vqgan_jax.inception",
                                     description="Make the Inception npz that FID/KID/IS read.")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="convert a downloaded pytorch-fid .pth (needs torch)")
    convert.add_argument("--pth", required=True, help=PTH_NAME)
    convert.add_argument("--out", required=True, help="the npz to write")
    download = sub.add_parser("download", help="download pytorch-fid's .pth and convert it (needs torch)")
    download.add_argument("--out", required=True, help="the npz to write; the .pth is kept beside it")
    args = parser.parse_args(argv)
    if args.command == "convert":
        out = convert_pytorch_fid(args.pth, args.out)
    else:
        out = download_pytorch_fid(os.path.dirname(os.path.abspath(args.out)), args.out)
    print(f"wrote {out}")
