"""What every data source hands the shared pipeline: one process's share of a split, and the class filter."""
import dataclasses
from typing import Sequence

import tensorflow as tf

from vqgan_jax.errors import UserError


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
class Shard:
    """One process's share of a split, before shuffling and decoding.

    elements: dicts {'image': ..., 'label': int32 ()} where 'image' is, by kind,
      'pixels': uint8 (S, S, 3) ready to use; 'encoded': a JPEG/PNG/... string; 'path': a file name.
    size: number of elements (equal on every process so all run the same number of eval batches).
    """
    elements: tf.data.Dataset
    size: int
    kind: str
