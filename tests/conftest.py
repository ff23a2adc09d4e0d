"""Test-wide setup: 8 simulated CPU devices, set before JAX (or TF, which imports JAX) is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
from vqgan_jax.cli import configure_xla_flags  # noqa: E402  (imports no jax)

configure_xla_flags()  # the same XLA:CPU flags as train.py
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as the entry points (vqgan_jax/cli.py quiet_logs)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF never takes a GPU from JAX
# The parity tests compare float32 results to 1e-5; GPUs multiply float32 in TF32 by default (errors of
# ~1e-3), so a run on a GPU (JAX_PLATFORMS=cuda) asks for full float32. XLA:CPU computes float32 dots
# in float32 either way.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

# One persistent XLA compilation cache for the whole session (and the train.py subprocesses the
# tests start): the tiny models compile in seconds once, then load from the cache.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vqgan_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`--dist loadgroup`, `make test`)
def pytest_collection_modifyitems(config, items):
    """How the two workers of `make test` share the tests. Every test reading the shared tiny run folder
    (`run_dir`) joins one group, so one worker trains it while the other runs the rest, instead of waiting
    on its lock; every other test stays with its file, so a file's module fixtures (compiled setups)
    compile once, not once per worker. Compilation is most of the suite's time."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            group = "shared_run" if "run_dir" in item.fixturenames else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory):
    """A tiny run folder with stage 1 (4 steps) and a prior (4 steps) on `configs/demo.py:tiny`, trained
    once per test session and shared by the stage-2 and evaluation tests (read-only for them). Under
    pytest-xdist the workers share one copy: the first to get the lock trains it."""
    import fcntl

    from configs import demo
    from vqgan_jax import trainers
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's base folder, common to every worker
    work = str(shared / "shared_run")
    with open(str(shared / "shared_run.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not os.path.exists(os.path.join(work, "done")):
            trainers.train("vqgan", demo.get_config("tiny"), work)
            trainers.train("prior", demo.get_config("tiny"), work)
            open(os.path.join(work, "done"), "w").close()
    return work


@pytest.fixture(scope="session")
def diffusion_run_dir(run_dir, tmp_path_factory):
    """`run_dir`'s tiny stage 1 (copied) + a 4-step latent-diffusion prior on `configs/demo.py:tiny`, trained
    once per session and shared by the diffusion trainer and CLI tests (read-only for them)."""
    import shutil
    from configs import demo
    from vqgan_jax import trainers
    work = str(tmp_path_factory.mktemp("diffusion"))
    shutil.copytree(os.path.join(run_dir, "vqgan"), os.path.join(work, "vqgan"))
    trainers.train("diffusion", demo.get_config("tiny"), work)
    return work


# VQGAN_TEST_CPU_LOG=FILE: one JSON line per test with its CPU seconds (all threads of the worker process,
# so XLA's compile and compute threads count, plus the train.py / sample.py children it waited for;
# unlike wall time it does not grow when the machine is busy), the worker and start time (to see how the
# two workers shared the suite), and the XLA compilations of this process during the test (`compiles`:
# [[function, seconds], ...] of those over 0.2 s, slowest first, and compile_s, all of them; JAX logs them with
# jax_log_compiles; children not counted).
# For sizing the suite (`make test` must stay fast); off by default.
if os.environ.get("VQGAN_TEST_CPU_LOG"):
    import json
    import logging
    import re
    import resource
    import time

    _COMPILED = re.compile(r"Finished XLA compilation of (.+) in ([0-9.]+) sec")
    _compiles: list = []

    class _CompileLog(logging.Handler):
        def emit(self, record):
            m = _COMPILED.search(record.getMessage())
            if m:
                _compiles.append([m.group(1), round(float(m.group(2)), 2)])

    def pytest_configure(config):
        import jax
        jax.config.update("jax_log_compiles", True)
        handler = _CompileLog(level=logging.DEBUG)
        for name in ("jax._src.dispatch", "jax._src.interpreters.pxla"):
            logger = logging.getLogger(name)
            logger.addHandler(handler)
            logger.propagate = False  # the compile lines go to the file, not the terminal

    def _cpu_seconds():
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + kids.ru_utime + kids.ru_stime

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):
        t_cpu, t_wall, t_start = _cpu_seconds(), time.perf_counter(), time.time()
        _compiles.clear()
        yield
        with open(os.environ["VQGAN_TEST_CPU_LOG"], "a") as f:
            f.write(json.dumps({"test": item.nodeid, "cpu_s": round(_cpu_seconds() - t_cpu, 2),
                                "wall_s": round(time.perf_counter() - t_wall, 2),
                                "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                                "start": round(t_start, 1),
                                "compile_s": round(sum(s for _, s in _compiles), 2),
                                "compiles": sorted((c for c in _compiles if c[1] > 0.2), key=lambda c: -c[1])}) + "\n")
