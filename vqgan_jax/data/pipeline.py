"""tf.data input pipelines: synthetic flowers, TFDS data sets and image folders, one batch format.

Every source ends in the same pipeline, per process:
    elements of this process's shard (paths, encoded bytes or uint8 pixels, with int32 labels; the
    shard is cut before anything is shuffled or decoded, equal in size on every process)
    -> [train] epoch e = the shard shuffled with a seed from (seed, e) -> [train, or repeat=True] repeat
    -> decode to RGB (grayscale when data.channels=1) -> crop the largest centred (eval) or random (train)
       square -> resize it to image_size x image_size (bicubic, antialiased)
    -> [train] random horizontal flip -> [-1, 1]
    -> batch (drop_remainder) -> prefetch
Random crops and flips use stateless ops seeded by (seed, element position in the stream), so a pipeline
is a pure function of its seed (same seed, same batches; each epoch new orders and augmentations), and
`start_batch` can resume it mid-stream without decoding what it skips.
Cropping the square before resizing frames the same region as "resize the short side, then crop", at the
cost of resizing only the pixels that are kept.

TensorFlow is used for input only: the first call hides every GPU from it so it never takes memory JAX needs.
"""
import functools
from typing import Iterator

import numpy as np
import tensorflow as tf

from vqgan_jax.data import folders, synthetic, tfds
from vqgan_jax.data.shard import Shard, resolve_class_filter
from vqgan_jax.errors import UserError

SPLITS = ("train", "eval")
SOURCES = ("synthetic", "tfds", "folder")


@functools.cache
def _hide_gpus_from_tf() -> None:
    """Make TF CPU-only, once per process, before TF creates its runtime (JAX owns the accelerators)."""
    if tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")


# ---- synthetic ----------------------------------------------------------------------------------------

def _synthetic_shard(cfg, split: str, process_index: int, process_count: int) -> Shard:
    n = synthetic.split_size(split, cfg.synthetic_size)
    images, labels = synthetic.synthetic_flowers(cfg.image_size, n, synthetic.SPLIT_SEEDS[split])
    keep = resolve_class_filter(cfg.class_filter, synthetic.CLASS_NAMES, "the synthetic data")
    if keep is not None:
        images, labels = images[labels == keep], labels[labels == keep]
    per_process = len(labels) // process_count
    # Numpy slicing is ds.take(m).shard(count, index) without putting the whole split into the graph.
    sl = slice(process_index, per_process * process_count, process_count)
    elements = tf.data.Dataset.from_tensor_slices({"image": images[sl], "label": labels[sl]})
    return Shard(elements, per_process, "pixels")


# ---- image folders ------------------------------------------------------------------------------------

def _folder_shard(cfg, split: str, process_index: int, process_count: int) -> Shard:
    scan = folders.scan_folder(cfg.dir, cfg.eval_fraction)
    keep = resolve_class_filter(cfg.class_filter, scan.class_names, f"the flat folder {scan.root}")
    items = [(p, l) for p, l in (scan.train if split == "train" else scan.eval) if keep is None or l == keep]
    if not items:
        what = "held-out (eval) images" if split == "eval" else "training images"
        raise UserError(
            f"no {what} in {scan.root} (data.eval_fraction={cfg.eval_fraction}, "
            f"data.class_filter={cfg.class_filter!r}): add images or change data.eval_fraction")
    paths = tf.constant([p for p, _ in items])
    labels = tf.constant([l for _, l in items], tf.int32)
    per_process = len(items) // process_count  # remainder dropped
    elements = (tf.data.Dataset.from_tensor_slices({"image": paths, "label": labels})
                .take(per_process * process_count).shard(process_count, process_index))
    return Shard(elements, per_process, "path")


# ---- the shared pipeline ------------------------------------------------------------------------------

def _square_resize(image: tf.Tensor, size: int, seed: tf.Tensor | None) -> tf.Tensor:
    """uint8 (h, w, 3) -> float32 (size, size, 3) in [0, 255]: the largest square, centred (seed None) or at
    a random offset along the long side, resized with an antialiased bicubic filter."""
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(h, w)
    if seed is None:
        top, left = (h - side) // 2, (w - side) // 2
    else:
        u = tf.random.stateless_uniform([2], seed)                       # offsets uniform in [0, h - side]
        top = tf.minimum(tf.cast(u[0] * tf.cast(h - side + 1, tf.float32), tf.int32), h - side)
        left = tf.minimum(tf.cast(u[1] * tf.cast(w - side + 1, tf.float32), tf.int32), w - side)
    square = image[top:top + side, left:left + side]
    resized = tf.image.resize(square, [size, size], method="bicubic", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)                        # bicubic overshoots at edges


def channels_of(data_cfg) -> int:
    """data.channels (3 when a config predates the key); UserError unless 1 or 3."""
    channels = int(data_cfg.get("channels", 3))
    if channels not in (1, 3):
        raise UserError(f"data.channels={channels}: use 3 (RGB) or 1 (grayscale)")
    return channels


def _prepare(index, element, *, kind: str, size: int, seed: int, training: bool, flip: bool, channels: int = 3):
    """One element -> {'image': float32 (size, size, channels) in [-1, 1], 'label': int32 ()}."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), index]), 2))
    if kind == "pixels":
        image = tf.cast(element["image"], tf.float32)                   # already (size, size, 3)
        if channels == 1:
            image = tf.image.rgb_to_grayscale(image)                    # ITU-R 601 luma, (size, size, 1)
    else:
        data = tf.io.read_file(element["image"]) if kind == "path" else element["image"]
        image = _square_resize(_decode_file(data, channels), size, crop_seed if training else None)
    if training and flip:
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        image = tf.cond(mirror, lambda: image[:, ::-1], lambda: image)
    return {"image": image / 127.5 - 1.0, "label": element["label"]}


def make_dataset(data_cfg, *, split: str, global_batch_size: int, seed: int, training: bool,
                 process_index: int = 0, process_count: int = 1, repeat: bool | None = None,
                 start_batch: int = 0) -> tf.data.Dataset:
    """This process's batches of a split.

    Yields {'image': float32 (b, S, S, C) in [-1, 1] (C = data_cfg.channels: 3, or 1 for grayscale),
    'label': int32 (b,)} with b = global_batch_size // process_count and S = data_cfg.image_size; the last partial batch is dropped. training=True: seeded
    shuffle (epoch e's order is a function of (seed, e)), random crop, random flip if
    data_cfg.random_flip, repeats forever. training=False: centre crop, file order, no flip, one pass
    unless repeat=True. Process p gets rows p*b .. (p+1)*b - 1 of every global batch of one global
    stream: disjoint slices that together read every image once per epoch, and global batches that do
    not depend on the number of processes. start_batch=k starts at the
    (k+1)-th batch of that same stream, skipping undecoded elements and whole epochs for free, so a run
    resumed at step k sees the batches an uninterrupted run would have.
    """
    _hide_gpus_from_tf()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if data_cfg.source not in SOURCES:
        raise UserError(f"data.source={data_cfg.source!r} is not one of {'|'.join(SOURCES)}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    if global_batch_size <= 0 or global_batch_size % process_count:
        raise UserError(f"the batch size {global_batch_size} must be a positive multiple of the "
                        f"{process_count} processes: change train.batch_size")
    if data_cfg.image_size <= 0:
        raise UserError(f"data.image_size={data_cfg.image_size} must be positive")
    if start_batch < 0:
        raise ValueError(f"start_batch must be >= 0, got {start_batch}")
    batch = global_batch_size // process_count
    repeat = training if repeat is None else repeat
    channels = channels_of(data_cfg)

    # Every process walks the same global stream (the whole split, shuffled by the same seed) and keeps
    # its slice of each global batch, so the global batches, and every loss, are the same for any number
    # of processes; filtering by position happens before decoding, so each image is decoded once.
    if data_cfg.source == "synthetic":
        shard = _synthetic_shard(data_cfg, split, 0, 1)
    elif data_cfg.source == "folder":
        shard = _folder_shard(data_cfg, split, 0, 1)
    else:
        shard = tfds.shard(data_cfg, split, 0, 1)
    if shard.size == 0 or (not repeat and shard.size < global_batch_size):
        raise UserError(
            f"the {split} split has {shard.size} examples, fewer than one batch of {global_batch_size}: "
            "lower train.batch_size or use more data (data.eval_fraction for folders)")

    n, start = shard.size, start_batch * global_batch_size              # start: a global element position
    if training:
        # Epoch e is the split shuffled with a seed drawn from (seed, e), so any epoch can be started
        # without replaying the ones before it. File names are tiny: shuffle those over the whole split.
        buffer = n if shard.kind == "path" else min(n, max(1, data_cfg.shuffle_buffer))
        first_epoch = start // n if repeat else 0

        def epoch(e):
            epoch_seed = tf.random.stateless_uniform(
                [], tf.stack([tf.constant(seed, tf.int64), e]), minval=None, maxval=None, dtype=tf.int64)
            return shard.elements.shuffle(buffer, seed=epoch_seed, reshuffle_each_iteration=False)

        epochs = tf.data.Dataset.range(first_epoch, 2**62 if repeat else 1)
        ds = epochs.flat_map(epoch).enumerate(start=first_epoch * n).skip(start - first_epoch * n)
    else:
        ds = (shard.elements.repeat() if repeat else shard.elements).enumerate().skip(start)
    if not repeat:  # one pass: whole global batches only, so every process gets the same number
        ds = ds.take(max((n // global_batch_size) * global_batch_size - start, 0))
    if process_count > 1:
        ds = ds.filter(lambda i, _: tf.equal((i % global_batch_size) // batch, process_index))
    # The element position (counted from the stream's start) seeds that element's crop and flip.
    ds = ds.map(
        functools.partial(_prepare, kind=shard.kind, size=data_cfg.image_size, seed=seed,
                          training=training, flip=training and data_cfg.random_flip, channels=channels),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # No ignore_errors: the folder scan decodes every file first, and dropping a batch element here
    # would shift every later batch (a resumed run would then differ from a straight one).
    ds = ds.batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def iterate_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `make_dataset` as numpy dicts {'image': float32 (b, S, S, 3), 'label': int32 (b,)}.

    A file that cannot be decoded (changed on disk after the scan, or a format TF reads differently
    from PIL) ends the run with one line naming the problem instead of a tf.data traceback.
    """
    try:
        yield from ds.as_numpy_iterator()
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError) as e:
        message = " ".join(str(e.message).split())[:300]
        raise UserError(f"cannot read an image of the data set ({message}): remove or replace that file") from None


def _decode_file(data: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Encoded image bytes -> uint8 (h, w, channels): any mode and 16-bit images to 8-bit RGB or luma."""
    # channels=3 turns grayscale, grayscale+alpha, RGBA and palette images into RGB (alpha dropped);
    # channels=1 turns colour images into luma and keeps grayscale ones exactly. dtype=uint8 rescales
    # 16-bit PNGs (x * 255 / 65535) instead of clipping them.
    image = tf.io.decode_image(data, channels=channels, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def load_file(path: str, size: int) -> np.ndarray:
    """One image file -> float32 (size, size, 3) in [-1, 1], exactly as training sees a held-out image
    (the same decoder, centre square, antialiased bicubic resize). Raises UserError when unreadable."""
    _hide_gpus_from_tf()
    try:
        image = _square_resize(_decode_file(tf.io.read_file(path)), size, None)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError) as e:
        raise UserError(f"cannot read image {path}: {' '.join(str(e.message).split())[:200]}") from None
    return image.numpy() / 127.5 - 1.0


def dataset_info(data_cfg) -> dict:
    """What the data holds, over all processes and after data.class_filter.

    Returns {'num_classes': int (0 when unlabelled), 'class_names': list[str], 'num_train': int,
    'num_eval': int, 'num_skipped': int (folder files that could not be opened)}. Labels keep their ids
    in the full class list, so with a class filter num_classes is still the full count.
    """
    _hide_gpus_from_tf()
    if data_cfg.source not in SOURCES:
        raise UserError(f"data.source={data_cfg.source!r} is not one of {'|'.join(SOURCES)}")
    skipped = 0
    if data_cfg.source == "synthetic":
        names = synthetic.CLASS_NAMES
        keep = resolve_class_filter(data_cfg.class_filter, names, "the synthetic data")
        sizes = []
        for split in SPLITS:
            n = synthetic.split_size(split, data_cfg.synthetic_size)
            _, labels = synthetic.synthetic_flowers(data_cfg.image_size, n, synthetic.SPLIT_SEEDS[split])
            sizes.append(int(np.sum(labels == keep)) if keep is not None else n)
    elif data_cfg.source == "folder":
        scan = folders.scan_folder(data_cfg.dir, data_cfg.eval_fraction)
        names = scan.class_names
        keep = resolve_class_filter(data_cfg.class_filter, names, f"the flat folder {scan.root}")
        sizes = [sum(keep is None or label == keep for _, label in items)
                 for items in (scan.train, scan.eval)]
        skipped = len(scan.skipped)
    else:
        builder = tfds.get_builder(data_cfg.tfds_name, data_cfg.dir)
        names = tfds.labels(builder)
        keep = resolve_class_filter(data_cfg.class_filter, names, f"TFDS {data_cfg.tfds_name!r}")
        splits = [tfds.split_name(data_cfg, builder, split) for split in SPLITS]
        tfds.read(builder, splits[0])  # fails fast when not prepared
        sizes = [tfds.size(data_cfg, builder, split, keep) for split in splits]
    return {"num_classes": len(names), "class_names": list(names), "num_train": sizes[0],
            "num_eval": sizes[1], "num_skipped": skipped}
