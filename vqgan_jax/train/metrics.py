"""Where training numbers go: `metrics.jsonl`, TensorBoard scalars/images, and a progress line.

Metrics reach the host only at log steps (`jax.device_get` there); `check_finite` stops a run whose
loss became NaN/inf with a message naming the step, before any checkpoint of the bad state is written.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from typing import Mapping

import numpy as np

from vqgan_jax.errors import UserError

log = logging.getLogger("vqgan_jax")


class NonFiniteLoss(UserError):
    """A loss or the state became NaN or inf; the run stops and keeps its last finite checkpoint."""


NAN_HINT = "lower the learning rate, set --config.optim.grad_clip=1.0, or use float32"


def check_finite(metrics: Mapping[str, float], step: int, keys=None, *, last_good: str = "") -> None:
    """Raises NonFiniteLoss when a metric (of `keys`, default all) is NaN/inf. last_good: the clause
    naming the last finite checkpoint, e.g. 'the last finite checkpoint is step 200 in DIR'."""
    bad = [k for k, v in metrics.items() if (keys is None or k in keys) and not math.isfinite(float(v))]
    if bad:
        raise NonFiniteLoss(
            f"non-finite loss at step {step} ({', '.join(sorted(bad)[:4])}); the run stopped"
            f"{'; ' + last_good if last_good else ''}: {NAN_HINT}")


class MetricWriter:
    """Appends one JSON object per log step to `metrics.jsonl` and mirrors scalars/images to TensorBoard.

    workdir: the stage folder (e.g. runs/f64/vqgan). Only process 0 writes (pass enabled=False elsewhere).
    """

    def __init__(self, workdir: str, *, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                import tensorflow as tf  # TF is already a dependency (tf.data); its writer makes TB events
                self._tf = tf
                self._tb = tf.summary.create_file_writer(os.path.join(workdir, "tb"))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                for k, v in scalars.items():
                    self._tf.summary.scalar(k, float(v))

    def write_image(self, step: int, name: str, image_u8: np.ndarray) -> None:
        """image_u8: uint8 (H, W, 3)."""
        if self._tb is not None:
            with self._tb.as_default(step=int(step)):
                self._tf.summary.image(name, image_u8[None], max_outputs=1)

    def flush(self) -> None:
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str) -> list[dict]:
    """All rows of a metrics.jsonl file (for tests, plots and evaluation). A line that is not a JSON
    object (the partial last line of a killed writer) is skipped with a warning."""
    rows, bad = [], 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
            else:
                bad += 1
    if bad:
        log.warning("warning: skipped %d unreadable line(s) of %s", bad, path)
    return rows


def keep_rows_until(path: str, step: int) -> int:
    """Rewrites metrics.jsonl (atomically) without the rows after `step`, the steps a resumed run
    trains again; returns how many rows were dropped. A missing file is left missing."""
    if not os.path.exists(path):
        return 0
    with open(path, errors="replace") as f:
        lines = [line for line in f if line.strip()]
    kept = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue  # a partial line written by a killed process
        if isinstance(row, dict) and int(row.get("step", 0)) <= step:
            kept.append(json.dumps(row) + "\n")
    dropped = len(lines) - len(kept)
    if dropped:
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(kept)
        os.replace(tmp, path)
    return dropped


class Throughput:
    """Items per second between log steps, excluding the first (compiling) step, and an ETA."""

    def __init__(self, start_step: int, total_steps: int, items_per_step: int):
        self.total = total_steps
        self.items = items_per_step
        self._t = None
        self._s = start_step

    def exclude(self, seconds: float) -> None:
        """Leaves `seconds` (evaluation, image grids, checkpoint starts) out of the next rate."""
        if self._t is not None:
            self._t += seconds

    def mark(self, step: int) -> tuple[float, float]:
        """Returns (items/s, seconds left) since the last mark; (0, nan) at the first mark."""
        now = time.perf_counter()
        if self._t is None or step == self._s:
            self._t, self._s = now, step
            return 0.0, float("nan")
        rate_steps = (step - self._s) / max(now - self._t, 1e-9)
        self._t, self._s = now, step
        return rate_steps * self.items, (self.total - step) / max(rate_steps, 1e-9)


def progress_line(step: int, total: int, scalars: Mapping[str, float], keys, rate: float, eta_s: float,
                  unit: str = "img/s") -> str:
    parts = [f"step {step}/{total}"]
    parts += [f"{k} {scalars[k]:.4f}" for k in keys if k in scalars]
    if rate > 0:
        parts.append(f"{rate:.1f} {unit}")
    if math.isfinite(eta_s):
        m, s = divmod(int(eta_s), 60)
        h, m = divmod(m, 60)
        parts.append(f"ETA {h:d}:{m:02d}:{s:02d}")
    return " | ".join(parts)
