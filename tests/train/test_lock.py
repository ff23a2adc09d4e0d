"""The run-folder lock: a second trainer gets one line naming the holder; a killed holder never blocks."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vqgan_jax.errors import UserError
from vqgan_jax.train.lock import PartLock

HOLD = """
import sys, time
from vqgan_jax.train.lock import PartLock
PartLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _holder(part_dir):
    p = subprocess.Popen([sys.executable, "-c", HOLD, part_dir], stdout=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert p.stdout.readline().strip() == "locked"
    return p


def test_second_holder_is_refused_with_pid_and_host(tmp_path):
    part = str(tmp_path / "vqgan")
    p = _holder(part)
    try:
        with pytest.raises(UserError) as e:
            PartLock(part).acquire()
        assert f"PID {p.pid} on {socket.gethostname()}" in str(e.value)
    finally:
        p.kill()
        p.wait()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path):
    part = str(tmp_path / "vqgan")
    p = _holder(part)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert os.path.exists(os.path.join(part, ".lock"))  # the file stays; the lock does not
    with PartLock(part):
        with open(os.path.join(part, ".lock")) as f:
            assert f.read().split()[0] == str(os.getpid())


def test_release_lets_the_next_run_in(tmp_path):
    part = str(tmp_path / "p")
    with PartLock(part):
        with pytest.raises(UserError, match="being trained by PID"):
            PartLock(part).acquire()  # flock is per open file: a second open in one process conflicts too
    t0 = time.time()
    with PartLock(part):
        pass
    assert time.time() - t0 < 1
