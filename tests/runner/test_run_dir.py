"""A run directory belongs to the config that made it (runner/run_dir.py)."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY_SCALING
from runner.run import run
from runner.run_dir import config_differences
from runner.validation import ConfigError

QUIET = [*TINY_SCALING, "logger=csv", "callbacks=checkpoint", "print_results=false"]


def snapshot_files(run_dir):
    """Return {relative path: bytes} of the run's record and results."""
    names = ["results.json", ".hydra/config.yaml", ".hydra/overrides.yaml", "metrics.csv"]
    return {n: (run_dir / n).read_bytes() for n in names}


def test_config_differences_name_each_changed_leaf_and_ignore_where_it_writes():
    old = {"task": {"s": 1.0, "n": 3}, "seed": 0, "paths": {"output_dir": "/a"}, "resume": "auto"}
    new = {"task": {"s": 2.0, "n": 3, "x": 1}, "seed": 0, "paths": {"output_dir": "/b"},
           "resume": "never"}
    assert config_differences(old, new) == ["task.s: 1.0 -> 2.0", "task.x: (absent) -> 1"]
    assert config_differences(old, old) == []


def test_a_reused_run_directory_with_another_config_is_refused(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    first = run(make_cfg(QUIET, run_dir))
    assert first["status"] == "completed"
    before = snapshot_files(run_dir)
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*QUIET, "task.s=2.0"], run_dir))
    message = str(err.value)
    assert f"hydra.run.dir={run_dir} holds a run of another config (task.s: 1.0 -> 2.0)" in message
    assert "resume=never" in message
    assert snapshot_files(run_dir) == before  # the finished run's files are untouched


def test_a_failed_rerun_never_overwrites_a_finished_run(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    run(make_cfg(QUIET, run_dir))
    before = snapshot_files(run_dir)
    with pytest.raises(ConfigError, match="task.n_features=-1 is out of range"):
        run(make_cfg([*QUIET, "task.n_features=-1"], run_dir))
    assert snapshot_files(run_dir) == before
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_resume_never_starts_over_in_the_same_directory(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    first = run(make_cfg(QUIET, run_dir))
    second = run(make_cfg([*QUIET, "task.s=2.0", "resume=never"], run_dir))
    assert second["status"] == "completed" and second["resumed_from"] is None
    assert second["params"]["s"] == 2.0
    assert second["paper_metrics"]["test_loss"] != first["paper_metrics"]["test_loss"]
    with open(run_dir / "metrics.csv", newline="") as handle:
        steps = [row["step"] for row in csv.DictReader(handle) if row.get("test/loss")]
    assert len(steps) == len(set(steps)) == 10  # the new run's rows only, once each
    assert "task.s=2.0" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    # and the directory now belongs to the new config: the old one is refused
    with pytest.raises(ConfigError, match=r"task.s: 2.0 -> 1.0"):
        run(make_cfg(QUIET, run_dir))


def test_callbacks_none_writes_no_checkpoint(make_cfg, tmp_path):
    results = run(make_cfg([*TINY_SCALING, "logger=csv", "callbacks=none",
                            "print_results=false"], tmp_path / "run"))
    assert results["status"] == "completed" and results["spectra"] == {}
    assert not list((tmp_path / "run").rglob("*.ckpt"))  # not even Lightning's default one
