"""metrics.jsonl after a kill: a partial last line is skipped; a resume drops the rows it trains again."""
import json

import pytest

from vqgan_jax.train import metrics as metrics_lib


def _write(path, rows, tail=""):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write(tail)


def test_partial_last_line_is_skipped(tmp_path, caplog):
    path = str(tmp_path / "metrics.jsonl")
    _write(path, [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}], tail='{"step": 3, "a": 3.')
    rows = metrics_lib.read_metrics(path)
    assert [r["step"] for r in rows] == [1, 2]
    assert "skipped 1 unreadable line" in caplog.text


@pytest.mark.parametrize("until,steps,dropped", [(2, [1, 2], 3), (0, [], 5), (9, [1, 2, 3, 4], 1)])
def test_keep_rows_until(tmp_path, until, steps, dropped):
    path = str(tmp_path / "metrics.jsonl")
    _write(path, [{"step": s, "x": float(s)} for s in (1, 2, 3, 4)], tail='{"step": 5, "x"')
    assert metrics_lib.keep_rows_until(path, until) == dropped
    assert [r["step"] for r in metrics_lib.read_metrics(path)] == steps


def test_keep_rows_until_missing_file(tmp_path):
    assert metrics_lib.keep_rows_until(str(tmp_path / "none.jsonl"), 3) == 0
    assert not (tmp_path / "none.jsonl").exists()
