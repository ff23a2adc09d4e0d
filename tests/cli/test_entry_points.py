"""The entry points' process set-up (`prepare_process`): it never restarts the program, it sets our XLA
flags, and where the persistent compilation cache goes."""
import os
import subprocess
import sys

from vqgan_jax import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_SCRIPT = """
import os, sys
print("start", flush=True)
from vqgan_jax.cli import CPU_XLA_FLAGS, prepare_process
prepare_process()
assert all(f in os.environ["XLA_FLAGS"] for f in CPU_XLA_FLAGS), os.environ["XLA_FLAGS"]
print("after", repr(os.environ.get("GLIBC_TUNABLES", "")), sys.argv[1:])
print("cache", repr(os.environ["JAX_COMPILATION_CACHE_DIR"]))
"""


def _run(extra_env, cache_dir=""):
    """The script's output lines before its last ('cache ...'), which must name cache_dir."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAX_COMPILATION_CACHE_DIR")}
    env.update(extra_env, PYTHONPATH=ROOT)
    if cache_dir is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    lines = subprocess.run([sys.executable, "-c", _SCRIPT, "a b", "--x=1"], env=env, capture_output=True,
                           text=True, timeout=60, check=True).stdout.splitlines()
    return lines[:-1], lines[-1]


def test_prepare_process_never_restarts_and_sets_xla_flags():
    """No self-restart (huge pages are the user's opt-in: GLIBC_TUNABLES before the command), whatever
    the environment; our XLA:CPU flags are set, the user's tunables left alone."""
    assert _run({})[0] == ["start", "after '' ['a b', '--x=1']"]
    lines, _ = _run({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})
    assert lines == ["start", "after 'glibc.malloc.hugetlb=1' ['a b', '--x=1']"]
    assert not hasattr(cli, "use_huge_pages")


def test_prepare_process_turns_on_the_compilation_cache_unless_the_user_set_it(tmp_path, monkeypatch):
    # Unset: the default folder under XDG_CACHE_HOME (or ~/.cache).
    _, cache = _run({"XDG_CACHE_HOME": str(tmp_path)}, cache_dir=None)
    assert cache == f"cache {os.path.join(str(tmp_path), 'vqgan_jax', 'jax')!r}"
    assert cli.default_compilation_cache_dir({}).endswith(os.path.join(".cache", "vqgan_jax", "jax"))
    # ... which jax then uses: a compiled program lands there.
    script = ("from vqgan_jax.cli import prepare_process; prepare_process(); import jax; "
              "jax.block_until_ready(jax.jit(lambda x: x * 2 + 1)(1.0))")
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(tmp_path), PYTHONPATH=ROOT,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    subprocess.run([sys.executable, "-c", script], env=env, timeout=120, check=True)
    assert any(n.startswith("jit_") for n in os.listdir(tmp_path / "vqgan_jax" / "jax"))
    # The user's folder, or an empty value (no cache), is kept.
    assert _run({}, cache_dir="/somewhere")[1] == "cache '/somewhere'"
    assert _run({}, cache_dir="")[1] == "cache ''"
    # The bench scripts' setting: off unless the user set it.
    env = {}
    monkeypatch.setattr(os, "environ", env)
    cli.configure_compilation_cache(enable=False)
    assert env == {"JAX_COMPILATION_CACHE_DIR": ""}
    env["JAX_COMPILATION_CACHE_DIR"] = "/mine"
    cli.configure_compilation_cache(enable=False)
    assert env == {"JAX_COMPILATION_CACHE_DIR": "/mine"}
