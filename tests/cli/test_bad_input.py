"""Bad input at the command line: one `error:` line and exit status 2, never a traceback or lost work."""
import json
import os
import shutil

import pytest

from tests.cli.commands import one_line_error, run
from vqgan_jax.train import runs
from vqgan_jax.train.lock import PartLock

TINY = ("--config", "configs/demo.py:tiny")


@pytest.fixture(scope="module")
def copy_of_run(run_dir, tmp_path_factory):
    """A private copy of the shared tiny run folder, for tests that damage it."""
    def make():
        dst = str(tmp_path_factory.mktemp("copy") / "run")
        shutil.copytree(run_dir, dst)
        return dst
    return make


@pytest.mark.parametrize("script", ["train.py", "sample.py", "-m vqgan_jax.evaluate"])
def test_extra_positional_argument(script, tmp_path):
    more = TINY if script == "train.py" else ("--out", str(tmp_path / "o"))
    one_line_error(run(script, *more, "--workdir", str(tmp_path), "stray"), "unexpected arguments: stray")


@pytest.mark.slow
def test_train_settings_that_keep_no_model(tmp_path):
    r = run("train.py", *TINY, "--workdir", str(tmp_path / "w"), "--config.train.keep_checkpoints=0")
    one_line_error(r, "train.keep_checkpoints=0")
    r = run("train.py", *TINY, "--workdir", str(tmp_path / "w"), "--config.train.num_steps=-3")
    one_line_error(r, "train.num_steps=-3")


@pytest.mark.slow
def test_a_second_trainer_on_a_locked_folder(tmp_path):
    work = str(tmp_path / "w")
    with PartLock(runs.stage_dir(work, "vqgan")):
        r = run("train.py", *TINY, "--workdir", work)
    one_line_error(r, f"PID {os.getpid()}", "being trained")


def test_sample_batch_size_num_and_unwritable_out(run_dir, tmp_path):
    one_line_error(run("sample.py", "--workdir", run_dir, "--out", str(tmp_path / "s"), "--batch_size", "0"),
                   "--batch_size=0")
    one_line_error(run("sample.py", "--workdir", run_dir, "--out", str(tmp_path / "s"), "--num", "-2"), "--num=-2")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    # A folder under a regular file can never be created: refused before anything is loaded.
    one_line_error(run("sample.py", "--workdir", run_dir, "--out", str(blocker / "sub")), "cannot be written")
    os.chmod(tmp_path, 0o500)
    try:
        if not os.access(tmp_path, os.W_OK):  # root ignores permissions
            one_line_error(run("sample.py", "--workdir", run_dir, "--codebook", "--out", str(tmp_path / "c.png")),
                           "cannot be written")
    finally:
        os.chmod(tmp_path, 0o700)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"model": 3, "data": {}}'])
def test_garbage_config_json(copy_of_run, tmp_path, content):
    work = copy_of_run()
    with open(runs.config_path(work, "vqgan"), "w") as f:
        f.write(content)
    one_line_error(run("sample.py", "--workdir", work, "--reconstruct", work, "--out", str(tmp_path / "r.png")),
                   "config.json")


@pytest.mark.slow
def test_damaged_checkpoints_fall_back_or_say_so(copy_of_run, tmp_path):
    work = copy_of_run()
    ck = runs.checkpoint_dir(work, "prior")
    steps = sorted(int(s) for s in os.listdir(ck) if s.isdigit())
    with open(os.path.join(ck, str(steps[-1]), "default", "_METADATA"), "w") as f:
        f.write("")
    r = run("sample.py", "--workdir", work, "--num", "2", "--batch_size", "2", "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"step {steps[-1]}" in r.stderr and "damaged" in r.stderr
    for s in steps:
        shutil.rmtree(os.path.join(ck, str(s), "default"))
    one_line_error(run("sample.py", "--workdir", work, "--num", "2", "--out", str(tmp_path / "t")),
                   "no intact checkpoint")


@pytest.mark.slow
def test_partial_metrics_line_and_damaged_token_shard(copy_of_run, tmp_path):
    work = copy_of_run()
    with open(os.path.join(work, "vqgan", "metrics.jsonl"), "a") as f:
        f.write('{"step": 99, "g/rec": 0.')  # a writer killed mid-line
    r = run("sample.py", "--workdir", work, "--training_pictures", "--out", str(tmp_path / "pics"))
    assert r.returncode == 0, r.stderr[-2000:]
    shard = sorted(p for p in os.listdir(runs.tokens_dir(work)) if p.startswith("shard_"))[0]
    with open(os.path.join(runs.tokens_dir(work), shard), "r+b") as f:
        f.truncate(50)
    meta = json.load(open(os.path.join(runs.tokens_dir(work), "meta.json")))
    assert meta["count"] > 0
    one_line_error(run("train.py", *TINY, "--workdir", work, "--stage", "prior", "--config.prior.num_steps=6"),
                   "token shard", "damaged")
