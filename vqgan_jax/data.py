"""tf.data input pipelines: synthetic flowers, TFDS data sets and image folders, one batch format.

Every source ends in the same pipeline, per process:
    elements of this process's shard (paths, encoded bytes or uint8 pixels, with int32 labels; the
    shard is cut before anything is shuffled or decoded, equal in size on every process)
    -> [train] epoch e = the shard shuffled with a seed from (seed, e) -> [train, or repeat=True] repeat
    -> decode to RGB -> crop the largest centred (eval) or random (train) square -> resize it to
       image_size x image_size (bicubic, antialiased) -> [train] random horizontal flip -> [-1, 1]
    -> batch (drop_remainder) -> prefetch
Random crops and flips use stateless ops seeded by (seed, element position in the stream), so a pipeline
is a pure function of its seed (same seed, same batches; each epoch new orders and augmentations), and
`start_batch` can resume it mid-stream without decoding what it skips.
Cropping the square before resizing frames the same region as "resize the short side, then crop", at the
cost of resizing only the pixels that are kept.

TensorFlow is used for input only: the first call hides every GPU from it so it never takes memory JAX needs.
"""
import dataclasses
import functools
from typing import Iterator, Sequence

import numpy as np
import tensorflow as tf

from vqgan_jax import folders, synthetic
from vqgan_jax.errors import UserError

SPLITS = ("train", "eval")
SOURCES = ("synthetic", "tfds", "folder")


@functools.cache
def _hide_gpus_from_tf() -> None:
    """Make TF CPU-only, once per process, before TF creates its runtime (JAX owns the accelerators)."""
    if tf.config.get_visible_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")


def resolve_class_filter(class_filter, class_names: Sequence[str], where: str) -> int | None:
    """data.class_filter ("" / a class name / an id as a string) -> label id to keep, or None to keep all.

    A name is looked up first, so a class literally named "3" wins over id 3.
    """
    value = str(class_filter).strip()
    if not value:
        return None
    if not class_names:
        raise UserError(
            f"data.class_filter={value!r} needs labelled data, but {where} has no classes "
            "(a folder needs one subfolder per class): clear data.class_filter")
    if value in class_names:
        return list(class_names).index(value)
    if value.isdigit() and int(value) < len(class_names):
        return int(value)
    shown = ", ".join(repr(n) for n in list(class_names)[:8])
    raise UserError(
        f"data.class_filter={value!r} is not a class of {where}: use a name or an id below "
        f"{len(class_names)}, e.g. {shown}{', ...' if len(class_names) > 8 else ''}")


@dataclasses.dataclass(frozen=True)
class _Shard:
    """One process's share of a split, before shuffling and decoding.

    elements: dicts {'image': ..., 'label': int32 ()} where 'image' is, by kind,
      'pixels': uint8 (S, S, 3) ready to use; 'encoded': a JPEG/PNG/... string; 'path': a file name.
    size: number of elements (equal on every process so all run the same number of eval batches).
    """
    elements: tf.data.Dataset
    size: int
    kind: str


# ---- synthetic ----------------------------------------------------------------------------------------

def _synthetic_shard(cfg, split: str, process_index: int, process_count: int) -> _Shard:
    n = synthetic.split_size(split, cfg.synthetic_size)
    images, labels = synthetic.synthetic_flowers(cfg.image_size, n, synthetic.SPLIT_SEEDS[split])
    keep = resolve_class_filter(cfg.class_filter, synthetic.CLASS_NAMES, "the synthetic data")
    if keep is not None:
        images, labels = images[labels == keep], labels[labels == keep]
    per_process = len(labels) // process_count
    # Numpy slicing is ds.take(m).shard(count, index) without putting the whole split into the graph.
    sl = slice(process_index, per_process * process_count, process_count)
    elements = tf.data.Dataset.from_tensor_slices({"image": images[sl], "label": labels[sl]})
    return _Shard(elements, per_process, "pixels")


# ---- image folders ------------------------------------------------------------------------------------

def _folder_shard(cfg, split: str, process_index: int, process_count: int) -> _Shard:
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
    return _Shard(elements, per_process, "path")


# ---- TFDS ---------------------------------------------------------------------------------------------

def _tfds_builder(name: str, data_dir: str):
    """The TFDS builder for data.tfds_name reading from data.dir ("" = TFDS's default folder)."""
    import tensorflow_datasets as tfds  # deferred: importing it costs seconds and is only needed here

    if name.split(":")[0].split("/")[0] not in tfds.list_builders(with_community_datasets=False):
        raise UserError(f"unknown TFDS dataset {name!r} (data.tfds_name): see "
                        "https://www.tensorflow.org/datasets/catalog for the names")
    return tfds.builder(name, data_dir=data_dir or None)


def _tfds_read(builder, split) -> tf.data.Dataset:
    """Undecoded examples {'image': encoded string, 'label': int32} of a TFDS split (or subsplit), in
    record order (TFDS shuffled the records when it built them; our per-epoch shuffle does the rest, and
    a fixed file order keeps epoch e a pure function of the seed).

    Raises UserError at once when the data set was never built into data_dir. (Asking `is_prepared()`
    first would be simpler, but it is False under tfds.testing.mock_data, which serves fake records.)
    """
    import tensorflow_datasets as tfds

    features = builder.info.features
    if "image" not in features:
        raise UserError(f"TFDS {builder.name!r} has no 'image' feature: pick an image data set")
    try:
        ds = builder.as_dataset(
            split=split, shuffle_files=False,
            # Decoding happens in our own map, after shuffling, with channels=3 for grayscale data too.
            decoders={"image": tfds.decode.SkipDecoding()})
    except AssertionError as e:  # TFDS's "could not find data in DIR": never built there
        if "could not find data" not in str(e):
            raise
        root = builder.data_dir_root
        # Never fall back to a download: offline, TFDS retries it for minutes before failing.
        raise UserError(
            f"TFDS dataset {builder.name!r} is not prepared in {root}: run `tfds build {builder.name} "
            f"--data_dir={root}` on a machine with internet, or use --config.data.source=folder") from None
    has_label = "label" in features
    return ds.map(lambda ex: {
        "image": ex["image"],
        "label": tf.cast(ex["label"], tf.int32) if has_label else tf.constant(0, tf.int32)})


def _tfds_labels(builder) -> tuple[str, ...]:
    """Class names of the 'label' feature; () when the data set has none."""
    features = builder.info.features
    return tuple(features["label"].names) if "label" in features else ()


def _tfds_split(cfg, builder, split: str) -> str:
    """The TFDS split string for 'train' / 'eval', checked against the splits the data set has."""
    key = "train_split" if split == "train" else "eval_split"
    name = getattr(cfg, key)
    known = builder.info.splits
    for part in name.split("+"):  # "train", "train[:90%]", "train+validation", ...
        base = part.split("[")[0].strip()
        if known and base not in known and base != "all":
            raise UserError(f"data.{key}={name!r}: TFDS {builder.name!r} has no split {base!r}, only "
                            f"{', '.join(sorted(known))}")
    return name


def _count(builder, split: str, label: int | None) -> int:
    """Examples in a TFDS split, of one class if label is given (images stay undecoded)."""
    ds = _tfds_read(builder, split)
    if label is not None:
        ds = ds.filter(lambda ex: ex["label"] == label)
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1).numpy())


@functools.lru_cache(maxsize=32)
def _count_cached(name: str, data_dir: str, split: str, label: int) -> int:
    return _count(_tfds_builder(name, data_dir), split, label)


def _tfds_size(cfg, builder, split: str, keep: int | None) -> int:
    """Examples in a TFDS split after data.class_filter."""
    if not builder.info.splits:
        # No split sizes in the metadata (tfds.testing.mock_data without metadata files): count them.
        return _count(builder, split, keep)
    if keep is None:
        return builder.info.splits[split].num_examples
    return _count_cached(cfg.tfds_name, cfg.dir, split, keep)  # one class of a prepared data set: once


def _tfds_shard(cfg, split: str, process_index: int, process_count: int) -> _Shard:
    import tensorflow_datasets as tfds

    builder = _tfds_builder(cfg.tfds_name, cfg.dir)
    keep = resolve_class_filter(cfg.class_filter, _tfds_labels(builder), f"TFDS {cfg.tfds_name!r}")
    name = _tfds_split(cfg, builder, split)
    total = _tfds_size(cfg, builder, name, keep)
    per_process = total // process_count  # remainder dropped
    if keep is None:
        # Each process reads only its own contiguous slice of the records.
        sub = tfds.even_splits(name, n=process_count, drop_remainder=True)[process_index] \
            if process_count > 1 else name
        elements = _tfds_read(builder, sub)
    else:
        # A filtered class is spread unevenly over slices: read it all (one class is small) and shard that.
        elements = (_tfds_read(builder, name)
                    .filter(lambda ex: ex["label"] == keep)
                    .take(per_process * process_count).shard(process_count, process_index))
    return _Shard(elements, per_process, "encoded")


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


def _prepare(index, element, *, kind: str, size: int, seed: int, training: bool, flip: bool):
    """One element -> {'image': float32 (size, size, 3) in [-1, 1], 'label': int32 ()}."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(
        tf.stack([tf.constant(seed, tf.int64), index]), 2))
    if kind == "pixels":
        image = tf.cast(element["image"], tf.float32)                   # already (size, size, 3)
    else:
        data = tf.io.read_file(element["image"]) if kind == "path" else element["image"]
        # channels=3 turns grayscale, grayscale+alpha, RGBA and palette images into RGB (alpha dropped).
        image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
        image.set_shape([None, None, 3])
        image = _square_resize(image, size, crop_seed if training else None)
    if training and flip:
        mirror = tf.random.stateless_uniform([], flip_seed) < 0.5
        image = tf.cond(mirror, lambda: image[:, ::-1], lambda: image)
    return {"image": image / 127.5 - 1.0, "label": element["label"]}


def make_dataset(data_cfg, *, split: str, global_batch_size: int, seed: int, training: bool,
                 process_index: int = 0, process_count: int = 1, repeat: bool | None = None,
                 start_batch: int = 0) -> tf.data.Dataset:
    """This process's batches of a split.

    Yields {'image': float32 (b, S, S, 3) in [-1, 1], 'label': int32 (b,)} with b = global_batch_size //
    process_count and S = data_cfg.image_size; the last partial batch is dropped. training=True: seeded
    shuffle (epoch e's order is a function of (seed, e)), random crop, random flip if
    data_cfg.random_flip, repeats forever. training=False: centre crop, file order, no flip, one pass
    unless repeat=True. Processes read disjoint, equally sized shards. start_batch=k starts at the
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

    if data_cfg.source == "synthetic":
        shard = _synthetic_shard(data_cfg, split, process_index, process_count)
    elif data_cfg.source == "folder":
        shard = _folder_shard(data_cfg, split, process_index, process_count)
    else:
        shard = _tfds_shard(data_cfg, split, process_index, process_count)
    if shard.size == 0 or (not repeat and shard.size < batch):
        raise UserError(
            f"the {split} split has {shard.size} examples per process, fewer than one batch of {batch}: "
            "lower train.batch_size or use more data (data.eval_fraction for folders)")

    n, start = shard.size, start_batch * batch                          # start: an element position
    if training:
        # Epoch e is the shard shuffled with a seed drawn from (seed, e), so any epoch can be started
        # without replaying the ones before it. File names are tiny: shuffle those over the whole shard.
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
    # The element position (counted from the stream's start) seeds that element's crop and flip.
    ds = ds.map(
        functools.partial(_prepare, kind=shard.kind, size=data_cfg.image_size, seed=seed,
                          training=training, flip=training and data_cfg.random_flip),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if shard.kind != "pixels":
        # Safety net: a file that PIL could verify but TF cannot decode is dropped, not fatal.
        ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch, drop_remainder=True)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def iterate_numpy(ds: tf.data.Dataset) -> Iterator[dict[str, np.ndarray]]:
    """Batches of `make_dataset` as numpy dicts {'image': float32 (b, S, S, 3), 'label': int32 (b,)}."""
    yield from ds.as_numpy_iterator()


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
        builder = _tfds_builder(data_cfg.tfds_name, data_cfg.dir)
        names = _tfds_labels(builder)
        keep = resolve_class_filter(data_cfg.class_filter, names, f"TFDS {data_cfg.tfds_name!r}")
        splits = [_tfds_split(data_cfg, builder, split) for split in SPLITS]
        _tfds_read(builder, splits[0])  # fails fast when not prepared
        sizes = [_tfds_size(data_cfg, builder, split, keep) for split in splits]
    return {"num_classes": len(names), "class_names": list(names), "num_train": sizes[0],
            "num_eval": sizes[1], "num_skipped": skipped}
