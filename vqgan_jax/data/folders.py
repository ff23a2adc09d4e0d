"""Image folders: find the images under `data.dir`, name their classes, check they open, split them.

Two layouts are understood:
  * flat:      DIR/a.jpg, DIR/b.png, ...             -> unlabelled (label 0, no class names)
  * per class: DIR/daisy/a.jpg, DIR/rose/x/b.png, ... -> label = index of the class folder in sorted
               order, class names = folder names; images are found at any depth inside a class folder.
The held-out split is decided per file by a hash of its path relative to DIR, so adding or removing other
files never moves an image between train and eval. Every file is decoded with PIL once (in a thread pool;
JPEGs at a reduced scale, which still reads every byte) before training, so a corrupt or truncated file
is skipped and counted up front instead of crashing, stalling or silently shrinking a run.

Links: a symlinked file or class folder is read, but folders below a class folder are walked without
following links (a link back into the tree, `a/loop -> ..`, would list the data again under the wrong
class), a class-folder link into its own tree is skipped, and files are de-duplicated by real path (the
file's own path wins over a link to it), so no image is both held out and trained on or counted twice.
"""
import concurrent.futures
import dataclasses
import functools
import hashlib
import logging
import os

from PIL import Image

from vqgan_jax.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_HASH_BUCKETS = 10000


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What is in an image folder, split and checked.

    train, eval: (absolute path, label) pairs in sorted path order; label is 0 for a flat folder.
    class_names: class folder names in label order; () for a flat folder.
    skipped: paths (relative to root) of files with an image extension that PIL cannot open.
    """
    root: str
    class_names: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    eval: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...]


def is_eval_file(relpath: str, eval_fraction: float) -> bool:
    """Whether a file belongs to the held-out split: md5(relpath) mod 10000 < eval_fraction * 10000.

    relpath uses '/' separators so the split is the same on every OS.
    """
    bucket = int(hashlib.md5(relpath.encode("utf-8")).hexdigest(), 16) % _HASH_BUCKETS
    return bucket < round(eval_fraction * _HASH_BUCKETS)


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_images(top: str) -> list[tuple[str, int, int]]:
    """(absolute path, size in bytes, mtime in ns) of every image file at any depth under top, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skip .git, .ipynb_checkpoints
        for name in filenames:
            if _is_image_name(name):
                path = os.path.join(dirpath, name)
                stat = os.stat(path)
                found.append((path, stat.st_size, stat.st_mtime_ns))
    return sorted(found)


@functools.lru_cache(maxsize=None)
def _is_readable(path: str, size: int, mtime_ns: int) -> bool:
    """Whether PIL can verify and fully decode the file (a truncated JPEG passes `verify` but not a
    decode). Cached per (path, size, mtime): a changed file is checked again."""
    del size, mtime_ns  # only part of the cache key
    try:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))  # JPEG: decode at 1/2..1/8 scale; other formats ignore it
            image.load()
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ... for corrupt files
        return False


def _check_readable(files: list[tuple[str, int, int]]) -> list[bool]:
    """PIL open + verify of every file, in a thread pool (the work is file I/O and C code)."""
    workers = min(32, 4 * (os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda f: _is_readable(*f), files, chunksize=64))


def _list_layout(root: str) -> tuple[tuple[str, ...], list[tuple[str, int, int, int]]]:
    """Class names and (path, size, mtime_ns, label) for every image under root, in sorted path order."""
    entries = sorted(os.scandir(root), key=lambda e: e.name)
    loose = [e.name for e in entries if e.is_file() and _is_image_name(e.name)]
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".") and not _links_into(e, root)]
    per_class = [(d.name, _list_images(d.path)) for d in subdirs]
    per_class = [(name, files) for name, files in per_class if files]  # a folder without images is no class
    if not per_class:
        return (), _unique([(p, s, m, 0) for p, s, m in _list_images(root)]) if loose else []
    if loose:
        shown = ", ".join(n for n, _ in per_class[:3]) + (", ..." if len(per_class) > 3 else "")
        raise UserError(
            f"{root} mixes {len(loose)} images (e.g. {loose[0]}) with class folders ({shown}): move the "
            "images into a class folder or point data.dir at a folder of only images or only class folders")
    class_names = tuple(name for name, _ in per_class)
    files = [(p, s, m, label) for label, (_, fs) in enumerate(per_class) for p, s, m in fs]
    return class_names, _unique(files)


def _links_into(entry: os.DirEntry, root: str) -> bool:
    """A class folder that is a link to the root or to a folder above or inside it (a loop or a copy)."""
    if not entry.is_symlink():
        return False
    real, real_root = os.path.realpath(entry.path), os.path.realpath(root)
    return os.path.commonpath([real, real_root]) in (real, real_root)


def _unique(files: list) -> list:
    """One entry per real file, in the given (sorted) order: the file's own path when it is listed, else
    the first link to it."""
    chosen: dict[str, int] = {}
    for i, item in enumerate(files):
        real = os.path.realpath(item[0])
        if real not in chosen or (os.path.islink(files[chosen[real]][0]) and not os.path.islink(item[0])):
            chosen[real] = i
    return [files[i] for i in sorted(chosen.values())]


def scan_folder(root: str, eval_fraction: float) -> FolderScan:
    """Find, check and split the images under root.

    Raises UserError when root is not a readable folder of images or none of its images can be opened.
    Logs one warning naming the unreadable files that were skipped. The PIL check of a file is cached,
    so scanning the same folder again (train split, eval split, dataset_info) costs only a directory walk.
    """
    if not root:
        raise UserError("data.dir is empty: set --config.data.dir=/path/to/images for data.source=folder")
    if not os.path.exists(root):
        raise UserError(f"data.dir {root} does not exist: set --config.data.dir to a folder of images")
    if not os.path.isdir(root):
        raise UserError(f"data.dir {root} is not a directory: point it at a folder of images")
    if not 0.0 <= eval_fraction < 1.0:
        raise UserError(f"data.eval_fraction={eval_fraction} must be in [0, 1)")
    root = os.path.abspath(root)
    class_names, files = _list_layout(root)
    if not files:
        raise UserError(
            f"no images ({'/'.join(IMAGE_EXTENSIONS)}) found in {root}: data.dir must hold images or one "
            "subfolder of images per class")
    return _split(root, class_names, tuple(files), eval_fraction)


@functools.lru_cache(maxsize=16)
def _split(root: str, class_names: tuple[str, ...], files: tuple[tuple[str, int, int, int], ...],
           eval_fraction: float) -> FolderScan:
    """Check and split a listing. Cached on the listing itself so the skip warning is logged once."""
    readable = _check_readable([(p, s, m) for p, s, m, _ in files])
    train, held_out, skipped = [], [], []
    for (path, _, _, label), ok in zip(files, readable):
        relpath = os.path.relpath(path, root).replace(os.sep, "/")
        if not ok:
            skipped.append(relpath)
        elif is_eval_file(relpath, eval_fraction):
            held_out.append((path, label))
        else:
            train.append((path, label))
    if not train and not held_out:
        raise UserError(
            f"none of the {len(files)} images in {root} can be opened (e.g. {skipped[0]}): they are "
            "corrupt or not images")
    if skipped:
        logging.warning("skipping %d unreadable image file(s) in %s: %s%s", len(skipped), root,
                        ", ".join(skipped[:5]), ", ..." if len(skipped) > 5 else "")
    return FolderScan(root=root, class_names=class_names, train=tuple(train), eval=tuple(held_out),
                      skipped=tuple(skipped))
