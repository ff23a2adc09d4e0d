"""`make test`'s two workers share the suite by groups (tests/conftest.py): every test of a file on one
worker, so the file's compiled fixtures compile once. A pytest or pytest-xdist release that drops the
groups does so silently (pytest-dev/pytest-xdist issue 1386), making the suite slower, not red; this
test turns that into a failure."""
import collections
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILES = ["tests/losses/test_vae.py", "tests/losses/test_diffusion.py"]   # cheap, 5 and 11 tests


def test_each_file_runs_on_one_worker():
    r = subprocess.run([sys.executable, "-m", "pytest", *FILES, "-n", "2", "--dist", "loadgroup", "-v",
                        "-p", "no:cacheprovider"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    workers = collections.defaultdict(set)
    for worker, path in re.findall(r"\[(gw\d+)\] \[ *\d+%\] PASSED (\S+?)::", r.stdout):
        workers[path].add(worker)
    assert set(workers) == set(FILES), r.stdout[-3000:]
    # Without groups pytest-xdist deals the tests out one by one: both files land on both workers.
    assert all(len(w) == 1 for w in workers.values()), dict(workers)
