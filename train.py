"""Train a generator (stage 1: the config's model, e.g. the VQGAN) or a prior over it into a run folder.

    python train.py --config configs/flowers64.py --workdir runs/f64 [--stage vqgan|prior] \
        [--config.train.num_steps=20000 --config.data.source=folder --config.data.dir=DIR ...]

Run the same command again to continue from the last checkpoint (raise train.num_steps to train
longer). Exit status: 0 done, 2 bad input (one `error:` line), 3 a peer process died, 130/143 stopped by
SIGINT/SIGTERM after saving. See README.md and docs/ for the run folder, every config key and launching
on several hosts (docs/launch.md).
"""
from vqgan_jax.cli import prepare_process

prepare_process()  # before anything imports jax (XLA flags, compilation cache; see vqgan_jax/cli.py)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/NAME.py[:preset]); override keys with --config.KEY=VALUE.",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run folder (DIR/vqgan, DIR/prior, DIR/tokens live here).")
_STAGE = flags.DEFINE_string("stage", None, "Which stage to train: the config's generator (model.name, "
                             "e.g. vqgan; the default) or a prior over it (prior).")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first: auto-detects TPU pods, SLURM and "
    "Kubernetes; elsewhere give the three flags below (docs/launch.md).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0's "
                                   "coordinator (implies --distributed).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: how many processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index, 0..num_processes-1.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    from vqgan_jax import cli
    cli.reject_extra_args(argv)
    cli.quiet_logs()

    def go():
        cli.maybe_initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value,
                                         _PROCESS_ID.value)
        from vqgan_jax import trainers
        config = _CONFIG.value
        trainers.train(_STAGE.value or config.model.name, config, _WORKDIR.value)

    raise SystemExit(cli.run_cli(go))


if __name__ == "__main__":
    from vqgan_jax.cli import parse_flags
    app.run(main, flags_parser=parse_flags)
