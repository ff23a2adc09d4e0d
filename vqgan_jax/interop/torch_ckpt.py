"""PyTorch (Lightning) `.ckpt` / `.pt` files read and written without torch and without running pickled code.

A file that `torch.save` wrote (torch >= 1.6) is a zip archive: `<name>/data.pkl` pickles the object, and
each tensor's bytes lie in `<name>/data/<key>`, named by a persistent id inside the pickle.

`read_checkpoint(path)` unpickles data.pkl with a restricted unpickler:
- tensors are rebuilt as numpy arrays from the archive's data/ entries (torch._utils._rebuild_tensor_v2,
  _rebuild_parameter and the typed storage names are the only torch globals it knows);
- collections.OrderedDict and builtin containers / primitives are rebuilt as themselves;
- every other global (a Lightning callback class used as a dict key, an omegaconf node in hyper_parameters,
  argparse.Namespace, ...) becomes an inert `Opaque` record of its name and arguments: nothing named in the
  file is imported or called.
torch's own `torch.load(weights_only=True)` refuses such files outright (taming's released checkpoints name
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`), which is why this reader is used whether or
not torch is installed.

`write_checkpoint(path, obj)` writes dicts / OrderedDicts of numpy arrays and primitives in the same zip
layout, pickled opcode by opcode, so `torch.load(path, weights_only=True)` reads it back.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from typing import Any

import ml_dtypes
import numpy as np

from vqgan_jax.errors import UserError

# torch's legacy typed storage names (still what torch.save pickles) -> numpy dtypes.
STORAGE_DTYPES = {
    "FloatStorage": np.dtype(np.float32), "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16), "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64), "IntStorage": np.dtype(np.int32), "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8), "ByteStorage": np.dtype(np.uint8), "BoolStorage": np.dtype(np.bool_),
}
_STORAGE_NAMES = {v: k for k, v in STORAGE_DTYPES.items()}


class Opaque:
    """An object of a class this reader will not rebuild: its `name` ('module.Class') and the arguments and
    state the pickle gave it, kept as data. Hashable by identity, so it can be a dict key."""

    def __init__(self, name: str, args: tuple = ()):
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"Opaque({self.name})"


class _OpaqueClass:
    """What an unknown global unpickles to: calling it (REDUCE) or __new__-ing it (NEWOBJ) gives an Opaque."""

    def __init__(self, name: str):
        self.name = name
        # NEWOBJ calls `cls.__new__(cls, *args)` as a plain attribute: the instance's own entry answers it.
        self.__new__ = lambda _cls, *args, **_kwargs: Opaque(name, args)

    def __call__(self, *args, **_kwargs):
        return Opaque(self.name, args)

    def __repr__(self):
        return f"<class {self.name} (not loaded)>"


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _Storage:
    """A tensor storage in the archive: its dtype, its entry name, its element count (read lazily)."""

    def __init__(self, archive: "_Archive", key: str, dtype: np.dtype, numel: int):
        self.archive, self.key, self.dtype, self.numel = archive, key, dtype, numel

    def array(self) -> np.ndarray:
        return self.archive.storage(self.key, self.dtype)


class _Archive:
    def __init__(self, zf: zipfile.ZipFile, prefix: str, path: str):
        self.zf, self.prefix, self.path, self._cache = zf, prefix, path, {}

    def storage(self, key: str, dtype: np.dtype) -> np.ndarray:
        if key not in self._cache:
            name = f"{self.prefix}data/{key}"
            try:
                raw = self.zf.read(name)
            except KeyError:
                raise UserError(f"{self.path} is damaged: tensor data {name} is missing") from None
            self._cache[key] = np.frombuffer(raw, dtype=dtype)
        return self._cache[key]


def _rebuild_tensor(storage: _Storage, offset: int, size, stride, *_rest) -> np.ndarray:
    flat = storage.array()
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if not size:
        return np.array(flat[offset])
    needed = offset + 1 + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else offset
    if needed > flat.size:
        raise UserError(f"{storage.archive.path} is damaged: a tensor of shape {size} reaches past its storage")
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * flat.itemsize for s in stride])
    return np.array(view)  # a copy: contiguous, writable, independent of the archive bytes


def _rebuild_parameter(data, *_rest):
    return data


_TORCH_GLOBALS = {("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
                  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
                  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
                  ("collections", "OrderedDict"): collections.OrderedDict}
_BUILTINS = {"set": set, "frozenset": frozenset, "list": list, "dict": dict, "tuple": tuple, "int": int,
             "float": float, "complex": complex, "bool": bool, "str": str, "bytes": bytes, "bytearray": bytearray,
             "slice": slice, "range": range}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: _Archive):
        super().__init__(file)
        self.archive = archive

    def find_class(self, module, name):
        if (module, name) in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module in ("builtins", "__builtin__") and name in _BUILTINS:
            return _BUILTINS[name]
        return _OpaqueClass(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r:.80}")
        return _Storage(self.archive, str(key), STORAGE_DTYPES[storage_type.name], int(numel))


def read_checkpoint(path: str) -> Any:
    """The object a torch.save'd zip file holds, tensors as numpy arrays (see the module docstring).

    Raises UserError when the file is missing, is not a torch zip checkpoint, or is damaged.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} not found")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is not a PyTorch checkpoint (torch.save's zip format, torch >= 1.6); re-save it "
                        "with a current torch: torch.save(torch.load(f, weights_only=False), f)")
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise UserError(f"{path} is a zip file but not a PyTorch checkpoint (no <name>/data.pkl inside)")
        archive = _Archive(zf, pkls[0][: -len("data.pkl")], path)
        try:
            return _RestrictedUnpickler(io.BytesIO(zf.read(pkls[0])), archive).load()
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, TypeError, AttributeError,
                IndexError) as e:
            raise UserError(f"cannot read {path}: {type(e).__name__}: {e}") from None


def state_dict_of(obj: Any, path: str) -> dict[str, np.ndarray]:
    """The tensors of a checkpoint object: its 'state_dict' entry (Lightning) or the object itself when it is
    already a flat name -> array mapping."""
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise UserError(f"{path} holds no state_dict of tensors (is it a model checkpoint?)")
    return dict(sd)


# ---- writing -------------------------------------------------------------------------------------------
class _Writer:
    """Emits pickle protocol-2 opcodes for dicts, OrderedDicts, lists, tuples, primitives and numpy arrays
    (as torch tensors whose bytes go into data/<key>)."""

    def __init__(self):
        self.out = io.BytesIO()
        self.storages: list[np.ndarray] = []

    def op(self, b: bytes):
        self.out.write(b)

    def global_(self, module: str, name: str):
        self.op(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def save(self, x):
        if isinstance(x, np.ndarray) or isinstance(x, np.generic) and not isinstance(x, (np.bool_,)):
            return self.tensor(np.asarray(x))
        if x is None:
            return self.op(b"N")
        if isinstance(x, (bool, np.bool_)):
            return self.op(b"\x88" if x else b"\x89")
        if isinstance(x, int):
            if -2 ** 31 <= x < 2 ** 31:
                return self.op(b"J" + struct.pack("<i", x))
            raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
            return self.op(b"\x8a" + bytes([len(raw)]) + raw)
        if isinstance(x, float):
            return self.op(b"G" + struct.pack(">d", x))
        if isinstance(x, str):
            raw = x.encode("utf-8")
            return self.op(b"X" + struct.pack("<I", len(raw)) + raw)
        if isinstance(x, tuple):
            self.op(b"(")
            for v in x:
                self.save(v)
            return self.op(b"t")
        if isinstance(x, list):
            self.op(b"](")
            for v in x:
                self.save(v)
            return self.op(b"e")
        if isinstance(x, dict):
            if isinstance(x, collections.OrderedDict):
                self.global_("collections", "OrderedDict")
                self.op(b")R")
            else:
                self.op(b"}")
            if x:
                self.op(b"(")
                for k, v in x.items():
                    self.save(k)
                    self.save(v)
                self.op(b"u")
            return None
        raise TypeError(f"cannot write {type(x).__name__} into a torch checkpoint")

    def tensor(self, a: np.ndarray):
        if a.dtype not in _STORAGE_NAMES:
            raise TypeError(f"no torch storage type for dtype {a.dtype}")
        a = np.array(a, order="C")  # (ascontiguousarray would turn a 0-d array into shape (1,))
        key = str(len(self.storages))
        self.storages.append(a)
        strides = tuple(int(np.prod(a.shape[i + 1:], dtype=np.int64)) for i in range(a.ndim))
        self.global_("torch._utils", "_rebuild_tensor_v2")
        self.op(b"(")
        self.op(b"(")                                             # the persistent id tuple
        self.save("storage")
        self.global_("torch", _STORAGE_NAMES[a.dtype])
        self.save(key)
        self.save("cpu")
        self.save(int(a.size))
        self.op(b"tQ")
        self.save(0)                                              # storage offset
        self.save(tuple(int(s) for s in a.shape))
        self.save(strides)
        self.save(False)                                          # requires_grad
        self.save(collections.OrderedDict())                      # backward hooks
        self.op(b"tR")


def write_checkpoint(path: str, obj: Any, archive_name: str = "archive") -> None:
    """Writes `obj` (dicts / OrderedDicts / lists / tuples of numpy arrays, str, int, float, bool, None) as a
    torch zip checkpoint at `path` (atomically: a temporary file renamed at the end)."""
    w = _Writer()
    w.op(b"\x80\x02")
    w.save(obj)
    w.op(b".")
    tmp = os.fspath(path) + ".tmp"
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"{archive_name}/data.pkl", w.out.getvalue())
        zf.writestr(f"{archive_name}/byteorder", "little")
        for key, a in enumerate(w.storages):
            zf.writestr(f"{archive_name}/data/{key}", a.astype(a.dtype.newbyteorder("<")).tobytes())
        zf.writestr(f"{archive_name}/version", "3\n")
    os.replace(tmp, path)
