"""TFDS data sets as a data source: undecoded records of a split, sharded per process, with a fast failure
when the data set was never prepared (offline, TFDS would retry a download for minutes)."""
import functools

import numpy as np
import tensorflow as tf

from vqgan_jax.data.shard import Shard, resolve_class_filter
from vqgan_jax.errors import UserError


def get_builder(name: str, data_dir: str):
    """The TFDS builder for data.tfds_name reading from data.dir ("" = TFDS's default folder)."""
    import tensorflow_datasets as tfds  # deferred: importing it costs seconds and is only needed here

    if name.split(":")[0].split("/")[0] not in tfds.list_builders(with_community_datasets=False):
        raise UserError(f"unknown TFDS dataset {name!r} (data.tfds_name): see "
                        "https://www.tensorflow.org/datasets/catalog for the names")
    return tfds.builder(name, data_dir=data_dir or None)


def read(builder, split) -> tf.data.Dataset:
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


def labels(builder) -> tuple[str, ...]:
    """Class names of the 'label' feature; () when the data set has none."""
    features = builder.info.features
    return tuple(features["label"].names) if "label" in features else ()


def split_name(cfg, builder, split: str) -> str:
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
    ds = read(builder, split)
    if label is not None:
        ds = ds.filter(lambda ex: ex["label"] == label)
    return int(ds.reduce(np.int64(0), lambda count, _: count + 1).numpy())


@functools.lru_cache(maxsize=32)
def _count_cached(name: str, data_dir: str, split: str, label: int) -> int:
    return _count(get_builder(name, data_dir), split, label)


def size(cfg, builder, split: str, keep: int | None) -> int:
    """Examples in a TFDS split after data.class_filter."""
    if not builder.info.splits:
        # No split sizes in the metadata (tfds.testing.mock_data without metadata files): count them.
        return _count(builder, split, keep)
    if keep is None:
        return builder.info.splits[split].num_examples
    return _count_cached(cfg.tfds_name, cfg.dir, split, keep)  # one class of a prepared data set: once


def shard(cfg, split: str, process_index: int, process_count: int) -> Shard:
    """This process's share of a TFDS split (records undecoded), after data.class_filter."""
    import tensorflow_datasets as tfds

    builder = get_builder(cfg.tfds_name, cfg.dir)
    keep = resolve_class_filter(cfg.class_filter, labels(builder), f"TFDS {cfg.tfds_name!r}")
    name = split_name(cfg, builder, split)
    total = size(cfg, builder, name, keep)
    per_process = total // process_count  # remainder dropped
    if keep is None:
        # Each process reads only its own contiguous slice of the records.
        sub = tfds.even_splits(name, n=process_count, drop_remainder=True)[process_index] \
            if process_count > 1 else name
        elements = read(builder, sub)
    else:
        # A filtered class is spread unevenly over slices: read it all (one class is small) and shard that.
        elements = (read(builder, name)
                    .filter(lambda ex: ex["label"] == keep)
                    .take(per_process * process_count).shard(process_count, process_index))
    return Shard(elements, per_process, "encoded")
