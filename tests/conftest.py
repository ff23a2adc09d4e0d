"""Test-wide setup: 8 simulated CPU devices, set before JAX (or TF, which imports JAX) is imported."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
from vqgan_jax.cli import configure_xla_flags  # noqa: E402  (imports no jax)

configure_xla_flags()  # the same XLA:CPU flags as train.py
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")  # TF never takes a GPU from JAX

# One persistent XLA compilation cache for the whole session (and the train.py subprocesses the
# tests start): the tiny models compile in seconds once, then load from the cache.
import tempfile  # noqa: E402

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "vqgan_jax_test_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
