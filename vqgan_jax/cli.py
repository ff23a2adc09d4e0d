"""What the entry points share: process set-up, quiet logs, multi-host start-up, one-line errors.

`run_cli(fn)` calls `fn()` and maps how it ended to the exit status the README documents:

    0    done                               2    bad input: one `error: <message>` line, no traceback
    3    another process of a multi-process job died (this one stops at once, no hang)
    130  SIGINT / Ctrl-C (after saving a checkpoint when training)
    143  SIGTERM (after saving a checkpoint when training)
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from vqgan_jax.errors import Interrupted, PeerLost, UserError


# XLA:CPU sends convolutions to its YNNPACK fusions by default; on x86 CPUs we measured the flowers64
# autoencoder's forward at 1.03 s with them and 0.69 s without (3x3 conv 16x64x64x64: 47 ms vs 28 ms,
# on par with PyTorch's oneDNN). GPUs and TPUs ignore this flag.
CPU_XLA_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=",)


def configure_xla_flags() -> None:
    """Adds our XLA:CPU flags to XLA_FLAGS unless the user set them; call before jax is imported."""
    flags_now = os.environ.get("XLA_FLAGS", "")
    extra = [f for f in CPU_XLA_FLAGS if f.split("=")[0] not in flags_now]
    if extra:
        os.environ["XLA_FLAGS"] = " ".join([flags_now, *extra]).strip()


# JAX's persistent compilation cache keeps compiled programs between runs, so a resumed run or the next
# sample.py call skips most of the compile (the flowers64 stage-1 step on a 2-core CPU: 53.7 s to the
# first step, 15.2 s with the cache). JAX keys entries by program, XLA flags, devices and
# versions, writes them from process 0 only, and caches only programs that took >= 1 s to compile.
COMPILATION_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"


def default_compilation_cache_dir(environ) -> str:
    """$XDG_CACHE_HOME/vqgan_jax/jax, or ~/.cache/vqgan_jax/jax."""
    base = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vqgan_jax", "jax")


def configure_compilation_cache(enable: bool = True) -> None:
    """Turns JAX's persistent compilation cache on in `default_compilation_cache_dir` (enable=False: off)
    unless the user set JAX_COMPILATION_CACHE_DIR (another folder, or empty for no cache); call before
    jax is imported."""
    if COMPILATION_CACHE_ENV not in os.environ:
        os.environ[COMPILATION_CACHE_ENV] = default_compilation_cache_dir(os.environ) if enable else ""


def prepare_process(*, compilation_cache: bool = True) -> None:
    """What every entry point runs first, before jax is imported: `configure_xla_flags` and
    `configure_compilation_cache`. The bench scripts pass compilation_cache=False, so the compile times
    they report are cold ones. The library itself never calls it, and it never restarts the process."""
    configure_xla_flags()
    configure_compilation_cache(compilation_cache)


def quiet_logs() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TF runs only the input pipeline here (decode, resize, crop, flip), none of the matmul/conv ops
    # oneDNN speeds up; with it on, TF prints a notice at import that TF_CPP_MIN_LOG_LEVEL does not
    # silence (TF 2.21), which would bury a one-line error under four lines of log.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no "PyTorch was not found" notice
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("absl", "orbax", "jax", "tensorflow", "h5py", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


def maybe_initialize_distributed(enabled: bool, coordinator_address: str | None = None,
                                 num_processes: int | None = None, process_id: int | None = None) -> None:
    """Multi-host start-up. With only `enabled`, `jax.distributed.initialize()` auto-detects TPU pods,
    SLURM and Kubernetes (JobSet) set-ups; the explicit values serve every other cluster (all three or
    none). A peer that dies is noticed by the others within the heartbeat timeout (30 s), not 100 s."""
    explicit = [coordinator_address, num_processes, process_id]
    if any(v not in (None, "") for v in explicit):
        if any(v in (None, "") for v in explicit):
            raise UserError("--coordinator_address, --num_processes and --process_id go together")
        if not 0 <= int(process_id) < int(num_processes):
            raise UserError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
        enabled = True
    if not enabled:
        return
    import jax
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address or None, num_processes=num_processes,
                                   process_id=process_id, heartbeat_timeout_seconds=30)
    except ValueError as e:  # nothing to auto-detect, a malformed address, ...
        raise UserError(f"cannot start the multi-process job: {_one_line(e)}") from None


def reject_extra_args(argv: list[str]) -> None:
    """Positional arguments are a typo (e.g. a missing `--`): one line, exit status 2."""
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])} (flags start with --; see --help)",
              file=sys.stderr, flush=True)
        raise SystemExit(2)


def check_writable(path: str, *, is_dir: bool) -> None:
    """Fails before any work when `path` (a folder to create, or a file to write) cannot be written."""
    if os.path.exists(path) and os.path.isdir(path) != is_dir:
        raise UserError(f"--out {path} must be {'a folder' if is_dir else 'a file'}")
    probe = path if is_dir else (os.path.dirname(os.path.abspath(path)) or ".")
    while not os.path.exists(probe):  # the nearest existing parent decides whether we may create it
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"--out {path} cannot be written ({probe} is not a writable folder)")


def run_cli(fn: Callable[[], object]) -> int:
    """Runs fn() and returns the exit status (see the module docstring)."""
    try:
        fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except Interrupted as e:
        print(str(e), flush=True)
        return 128 + int(e.signum)
    except PeerLost as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)  # jax.distributed's shutdown would wait for the dead peer: leave without it
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e)
    if "Traceback" in text:  # config_flags embeds the config file's traceback: keep its last line
        text = text.strip().splitlines()[-1]
    if "Failed loading config file" in text or "No such file or directory" in text:
        missing = [w for w in text.split() if w.endswith(".py")]
        if missing:
            return f"config file not found: {missing[-1]}"
    if isinstance(e, (KeyError, AttributeError)) and text[:1] in "'\"":
        text = text[1:-1]  # KeyError / AttributeError quote their message
    text = text.replace("\\n", " ").replace("\\'", "'").replace("\n", " ")
    return " ".join(text.split())


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing with one-line errors: a misspelt --config.key, a bad value or a config file
    that fails to load ends with `error: ...` and exit status 2 instead of a traceback."""
    from absl import flags
    try:
        rest = flags.FLAGS(argv)
        if "config" in flags.FLAGS and flags.FLAGS["config"].present:
            _ = flags.FLAGS.config.keys  # config files load lazily: surface their errors here
        return rest
    except flags.Error as e:
        print(f"error: {_one_line(e)} (see --help)", file=sys.stderr)
    except Exception as e:  # noqa: BLE001 - any failure while reading flags/configs is the user's input
        print(f"error: bad command line or config: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
    raise SystemExit(2)
