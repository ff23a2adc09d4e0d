"""One training run of one run-folder part (DIR/vqgan, DIR/prior, ...): what every trainer shares.

    with TrainingPart(workdir, "vqgan", config, keep=..., ckpt_every=..., label="stage 1") as part:
        state, start = part.start(setup.abstract_state, lambda: setup.init_state(seed))
        loop.run(spec, state, start, part.ckpt, part.writer)

Entering takes the folder's lock (one training process per part: `train.lock`); `start` writes
config.json (refusing a changed network), opens the checkpoints and metrics, and resumes from the newest
intact checkpoint (damaged newer ones are moved to DIR/<part>/damaged_checkpoints/ with a warning) and
drops the metrics rows after it, which the resumed run writes again; with no checkpoint at all, an
earlier run's metrics.jsonl is kept as metrics.jsonl.old and the run starts fresh. Leaving waits for the
last save and releases the lock, except after a lost peer (its collectives would hang).
"""
from __future__ import annotations

import os
from typing import Any, Callable

import jax

from vqgan_jax.errors import PeerLost
from vqgan_jax.train import metrics as metrics_lib
from vqgan_jax.train import runs
from vqgan_jax.train.checkpoint import Checkpointer
from vqgan_jax.train.lock import PartLock


class TrainingPart:
    """workdir: the run folder; part: its subfolder name; config: what config.json records;
    keep / ckpt_every: the checkpoint settings; label: how messages name the part ("stage 1")."""

    def __init__(self, workdir: str, part: str, config, *, keep: int, ckpt_every: int, label: str | None = None):
        self.workdir, self.part, self.config = workdir, part, config
        self.dir = runs.stage_dir(workdir, part)
        self.keep, self.ckpt_every = int(keep), int(ckpt_every)
        self.label = label or part
        self.lead = jax.process_index() == 0
        self._lock = PartLock(self.dir) if self.lead else None
        self.ckpt: Checkpointer | None = None
        self.writer: metrics_lib.MetricWriter | None = None

    @property
    def metrics_path(self) -> str:
        return os.path.join(self.dir, "metrics.jsonl")

    def __enter__(self) -> "TrainingPart":
        if self._lock is not None:
            self._lock.acquire()
        return self

    def start(self, abstract_state: Callable[[], Any], init_state: Callable[[], Any]) -> tuple[Any, int]:
        """Writes config.json, opens the checkpoints and metrics, and returns (state, step): the newest
        intact checkpoint restored into `abstract_state()`, or `init_state()` at step 0 when the part
        has no checkpoint. Call it once, inside the `with` block, when `config` is final."""
        if self.lead:
            runs.write_config(self.workdir, self.part, self.config)
        self.ckpt = Checkpointer(runs.checkpoint_dir(self.workdir, self.part), keep=self.keep,
                                 save_every=self.ckpt_every)
        self.writer = metrics_lib.MetricWriter(self.dir, enabled=self.lead)
        found = self.ckpt.restore_latest(abstract_state(), set_aside=True)
        if found is None:
            if self.lead and os.path.exists(self.metrics_path) and os.path.getsize(self.metrics_path) > 0:
                os.replace(self.metrics_path, self.metrics_path + ".old")
                print(f"no checkpoint in {self.ckpt.directory}: starting fresh (the earlier metrics.jsonl "
                      "is kept as metrics.jsonl.old)", flush=True)
            return init_state(), 0
        state, step = found
        if self.lead:
            metrics_lib.keep_rows_until(self.metrics_path, step)
        print(f"resuming {self.label} from step {step} in {self.dir}", flush=True)
        return state, int(step)

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self.ckpt is not None and not isinstance(exc, PeerLost):
                self.ckpt.close()
        finally:
            self._release()
        return False

    def _release(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._lock is not None:
            self._lock.release()
