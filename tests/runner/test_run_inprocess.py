"""runner.run in-process (compose API): run-directory contract, W&B offline records, resume."""

from __future__ import annotations

import csv
import json
import math
import sys
import types

import pytest

from conftest import TINY_SCALING
from runner.loggers import finish_wandb
from runner.run import run
from runner.wandb_records import find_run_file, history


def read_metrics_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_writes_the_run_directory_contract(make_cfg, tmp_path):
    run_dir = tmp_path / "run"
    results = run(make_cfg([*TINY_SCALING, "task.optimizer=adam"], run_dir))
    assert results["status"] == "completed"
    on_disk = json.loads((run_dir / "results.json").read_text())
    for key in ("status", "task", "seed", "overrides", "wall_time_s", "metrics", "paper_metrics",
                "git_commit", "versions"):
        assert key in on_disk, key
    assert on_disk["task"] == "optimizer_scaling" and on_disk["seed"] == 0
    assert on_disk["versions"]["torch"].startswith("2.13.0")
    loss = on_disk["paper_metrics"]["test_loss"]
    assert math.isfinite(loss) and loss > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    rows = read_metrics_csv(run_dir / "metrics.csv")
    train_rows = [r for r in rows if r.get("test/loss")]
    assert len(train_rows) == 10  # one row per step
    assert all(math.isfinite(float(r["test/loss"])) for r in train_rows)
    # The offline W&B run holds the same numbers as the CSV log.
    wb_rows = [r for r in history(find_run_file(run_dir)) if "test/loss" in r]
    assert len(wb_rows) == 10
    assert wb_rows[-1]["test/loss"] == pytest.approx(float(train_rows[-1]["test/loss"]), rel=1e-12)
    final = [r for r in history(find_run_file(run_dir)) if "paper/test_loss" in r]
    assert final and final[-1]["paper/test_loss"] == pytest.approx(loss, rel=1e-12)


def test_failed_run_keeps_what_it_wrote(make_cfg, tmp_path):
    run_dir = tmp_path / "crash"
    cfg = make_cfg([*TINY_SCALING, "callbacks.model_checkpoint.every_n_train_steps=2",
                    "+callbacks.crash._target_=helpers.CrashAtStep", "+callbacks.crash.step=5"],
                   run_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    assert "simulated crash" in results["error"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert find_run_file(run_dir).stat().st_size > 0


@pytest.mark.parametrize("optimizer", ["adam", "matrix_sign"])
def test_resume_matches_an_uninterrupted_run(make_cfg, tmp_path, optimizer):
    base = [*TINY_SCALING, "task.steps=12", f"task.optimizer={optimizer}",
            "callbacks.model_checkpoint.every_n_train_steps=3"]
    straight = run(make_cfg(base, tmp_path / "straight"))
    crash_dir = tmp_path / "resumed"
    crash = [*base, "+callbacks.crash._target_=helpers.CrashAtStep", "+callbacks.crash.step=7"]
    with pytest.raises(RuntimeError):
        run(make_cfg(crash, crash_dir))
    wandb_id = (crash_dir / "checkpoints" / "wandb_run_id").read_text().strip()
    resumed = run(make_cfg(base, crash_dir))
    assert resumed["resumed_from"].endswith("last.ckpt")
    assert resumed["global_step"] == straight["global_step"] == 12
    assert resumed["paper_metrics"]["test_loss"] == pytest.approx(
        straight["paper_metrics"]["test_loss"], rel=1e-12)
    assert (crash_dir / "checkpoints" / "wandb_run_id").read_text().strip() == wandb_id
    assert find_run_file(crash_dir).name == f"run-{wandb_id}.wandb"
    steps = [int(r["step"]) for r in read_metrics_csv(crash_dir / "metrics.csv")
             if r.get("test/loss")]
    assert steps[0] == 0 and steps[-1] == 11  # rows from before the crash were kept


def test_rerunning_a_finished_run_keeps_its_results(make_cfg, tmp_path):
    run_dir = tmp_path / "done"
    first = run(make_cfg([*TINY_SCALING, "logger=csv"], run_dir))
    again = run(make_cfg([*TINY_SCALING, "logger=csv"], run_dir))
    assert again["resumed_from"].endswith("last.ckpt")
    assert again["paper_metrics"] == first["paper_metrics"]


def test_ctrl_c_is_recorded_as_interrupted(make_cfg, tmp_path):
    run_dir = tmp_path / "ctrl_c"
    cfg = make_cfg([*TINY_SCALING, "logger=csv", "callbacks.model_checkpoint.every_n_train_steps=2",
                    "+callbacks.stop._target_=helpers.InterruptAtStep",
                    "+callbacks.stop.step=4"], run_dir)
    with pytest.raises(SystemExit):  # Lightning shuts down on Ctrl-C with exit status 1
        run(cfg)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()  # resume=auto continues from it


def test_finish_wandb_closes_an_open_run_and_imports_nothing_otherwise(monkeypatch):
    """The end of every run closes the W&B run of the process, if there is one; a run without
    W&B must not pay wandb's import (0.6 s) for it."""
    finished = []
    fake = types.SimpleNamespace(run=object(), finish=lambda: finished.append(True))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    finish_wandb()
    assert finished == [True]
    fake.run = None  # closed already: nothing to do
    finish_wandb()
    assert finished == [True]
    monkeypatch.delitem(sys.modules, "wandb")  # a process that never imported it
    finish_wandb()
    assert "wandb" not in sys.modules
