"""One training process per run-folder part: an advisory lock on DIR/<part>/.lock.

Two `train.py` on the same folder would interleave `metrics.jsonl` and fight over orbax's checkpoint
folders (either can delete the other's). The lock is `fcntl.flock` on an open file, so the kernel drops
it when its holder exits for any reason, kill -9 included: a stale lock never blocks the next run. The
file holds the holder's PID and host so the refusal can name them. On a multi-host job only process 0
takes it (the others train the same run with it). flock is per host on some network filesystems: two
hosts that are not one job must not share a run folder there.
"""
from __future__ import annotations

import fcntl
import os
import socket
import time

from vqgan_jax.errors import UserError

LOCK_NAME = ".lock"


class PartLock:
    """Exclusive lock of a part folder (e.g. runs/f64/vqgan); a context manager.

    part_dir: the folder; created when missing. Raises UserError naming the holder when taken.
    """

    def __init__(self, part_dir: str):
        self.part_dir = part_dir
        self.path = os.path.join(part_dir, LOCK_NAME)
        self._fd: int | None = None

    def acquire(self) -> "PartLock":
        os.makedirs(self.part_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode("utf-8", "replace").split()
            os.close(fd)
            who = f"PID {holder[0]} on {holder[1]}" if len(holder) >= 2 else "another process"
            raise UserError(
                f"{self.part_dir} is being trained by {who}: wait for it to finish, stop it, or use "
                "another --workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "PartLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False
