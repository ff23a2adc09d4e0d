"""Running the entry points as a user does, for the end-to-end tests."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(script: str, *args, timeout=300, env=None) -> subprocess.CompletedProcess:
    """`python SCRIPT ARGS` (script: 'train.py', 'sample.py' or '-m vqgan_jax.evaluate') from the root."""
    cmd = [sys.executable, *script.split(), *args]
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Asserts exit status 2, no traceback, exactly one `error:` line containing every needle."""
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]
