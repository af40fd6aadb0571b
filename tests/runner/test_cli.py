"""run.py as a user runs it: subprocesses for the CLI, sweeps, bad input and reports."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from conftest import ROOT, TINY_SCALING, run_cli
from runner.report import report
from runner.wandb_records import find_run_file, history, read_records


def run_group(run_dir: Path) -> str:
    """Return the W&B group recorded in the run's offline file."""
    for record in read_records(find_run_file(run_dir)):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_group
    raise AssertionError(f"no run record in {run_dir}")


def where(tmp_path: Path) -> list[str]:
    return [f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]


def only_dir(parent: Path) -> Path:
    dirs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_single_run_as_a_subprocess(tmp_path):
    proc = run_cli([*TINY_SCALING, "task.optimizer=natural_gradient", *where(tmp_path)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "optimizer_scaling")
    assert f"run directory: {run_dir}" in proc.stdout
    assert "paper/test_loss" in proc.stdout  # the results table
    # ...and the spectra table: the default callbacks watch the task's matrices (Σ̂ here;
    # this module has no forward and no weight matrix, so those probes turn themselves off)
    assert "spectra (last snapshot)" in proc.stdout and "plots/matrices.png" in proc.stdout
    assert "sigma_hat/top1" in proc.stdout
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (run_dir / ".hydra" / name).is_file()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed"
    assert "task.optimizer=natural_gradient" in results["overrides"]
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "checkpoints/last.ckpt").is_file()
    spectra = results["spectra"]
    assert sorted(spectra) == ["features", "matrices", "weights"] and spectra["matrices"]["off"] is None
    assert "no weight matrix" in spectra["weights"]["off"]  # an N×1 readout: nothing to fit
    assert "defines no forward()" in spectra["features"]["off"]
    assert "off: no weight matrix" in proc.stdout  # the table says why, not only the log
    assert (run_dir / results["spectra"]["matrices"]["plot"]).is_file()
    logged = [r["test/loss"] for r in history(find_run_file(run_dir)) if "test/loss" in r]
    assert logged[-1] == pytest.approx(results["paper_metrics"]["test_loss"], rel=1e-12)
    # microseconds in the directory name: <date>_<time>_<6 digits>
    assert len(run_dir.name.split("_")[-1]) == 6


def test_help_lists_groups_and_cfg_prints_the_config(tmp_path):
    helped = run_cli(["--help"], tmp_path)
    assert helped.returncode == 0
    lines = helped.stdout.splitlines()
    tasks = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))
    assert "task: " + ", ".join(tasks) in lines and "optimizer_scaling" in tasks
    assert "launcher: basic, local, slurm" in lines
    assert "trainer: cpu, ddp, ddp_sim, debug, default, gpu" in lines
    assert lines[0] == "spectrum is powered by Hydra."
    job = run_cli(["--cfg", "job", "task=optimizer_scaling", "task.optimizer=adam"], tmp_path)
    assert job.returncode == 0
    assert "optimizer: adam" in job.stdout and "n_features: 256" in job.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=optimiser_scaling", "Could not find 'task/optimiser_scaling'"),
        # Hydra itself refuses to override a key the task yaml lacks, naming it
        ("task.n_featurs=3", "Could not override 'task.n_featurs'"),
        ("+task.n_featurs=3", "task.n_featurs (set by the override +task.n_featurs=3) is not a "
                              "parameter of task optimizer_scaling (did you mean "
                              "task.n_features?); allowed: optimizer, n_features, s,"),
        ("task.n_features=abc", "task.n_features='abc' (set by the override task.n_features=abc) "
                                "is not allowed; expected a value of type int"),
        ("task.n_features=-1", "task.n_features=-1 is out of range; allowed: [1, inf) (set by "
                               "the override task.n_features=-1)"),
        ("task.optimizer=sgd", "task.optimizer='sgd' (set by the override task.optimizer=sgd) is "
                               "not allowed; expected one of: gd, diag, adam, matrix_sign, "
                               "natural_gradient"),
        ("trainer=gpu", "trainer.accelerator=gpu needs CUDA"),
        ("progress_bar=maybe", "progress_bar='maybe' is not allowed; choose one of: auto, true, "
                               "false (set by the override progress_bar=maybe)"),
    ],
)
def test_bad_input_fails_before_training_with_one_clear_message(tmp_path, override, message):
    task = [] if override.startswith("task=") else ["task=optimizer_scaling"]
    proc = run_cli([*task, override, *where(tmp_path)], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    outputs = tmp_path / "outputs"
    assert not outputs.exists() or not list(outputs.rglob("*.*")), list(outputs.rglob("*"))
    if "Could not find" in message:
        assert "Available options in 'task'" in proc.stderr


@pytest.mark.parametrize("where_file", ["experiment", "local"])
def test_a_bad_value_in_an_experiment_or_local_file_names_that_file(tmp_path, where_file):
    extra = tmp_path / "extra_conf"
    if where_file == "experiment":
        path, args = extra / "experiment" / "bad.yaml", ["task=optimizer_scaling", "experiment=bad"]
    else:
        path, args = extra / "local" / "default.yaml", ["task=optimizer_scaling"]
    path.parent.mkdir(parents=True)
    path.write_text("# @package _global_\ntask:\n  optimizer: adamw\n")
    proc = run_cli([*args, f"hydra.searchpath=[file://{extra}]", *where(tmp_path)], tmp_path)
    assert proc.returncode != 0
    rel = f"{where_file}/{path.name}"
    assert (f"task.optimizer='adamw' (set in {extra / rel}) is not allowed; expected one of: gd, "
            "diag, adam, matrix_sign, natural_gradient") in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.*"))


def test_basic_sweep_finishes_despite_a_failed_job_and_report_lists_it(tmp_path):
    proc = run_cli(["-m", *TINY_SCALING, "task.n_features=16,-1,32", *where(tmp_path)], tmp_path)
    assert proc.returncode != 0  # the sweep reports its failure...
    assert "1 job(s) failed" in proc.stderr + proc.stdout
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    statuses = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}
    assert statuses["0"]["status"] == "completed"  # ...after every other job ran
    assert statuses["2"]["status"] == "completed"
    assert statuses["1"]["status"] == "failed"
    assert "task.n_features=-1" in statuses["1"]["error"]
    groups = {run_group(sweep / job) for job in ("0", "2")}
    assert groups == {f"optimizer_scaling-{sweep.name}"}  # one W&B group per sweep
    tables = report(sweep)
    summary = tables["optimizer_scaling"]
    assert list(summary.columns[:3]) == ["optimizer", "s", "steps"] and "alpha" in summary
    md = (sweep / "summary.md").read_text()
    assert "Failed jobs" in md and "task.n_features=-1" in md
    assert (sweep / "summary.csv").is_file() and (sweep / "alpha_vs_s.png").is_file()


def test_local_launcher_runs_jobs_as_parallel_processes(tmp_path):
    proc = run_cli(["-m", "launcher=local", *TINY_SCALING, "task.optimizer=gd,natural_gradient",
                    "logger=csv", *where(tmp_path)], tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    results = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))]
    assert [r["status"] for r in results] == ["completed", "completed"]
    assert (sweep / ".submitit").is_dir()  # submitit's own job folders
    assert len({r["run_dir"] for r in results}) == 2


def test_slurm_launcher_hands_the_configured_parameters_to_submitit(tmp_path, monkeypatch):
    import submitit
    from hydra.core.utils import JobReturn, JobStatus

    seen: dict = {}

    class FakeJob:
        def results(self):
            return [JobReturn(status=JobStatus.COMPLETED, _return_value=None)]

    class FakeExecutor:
        def __init__(self, cluster, **kwargs):
            seen["cluster"], seen["init"] = cluster, kwargs

        def update_parameters(self, **kwargs):
            seen["params"] = kwargs

        def map_array(self, fn, *args):
            seen["jobs"] = list(zip(*args))
            return [FakeJob() for _ in seen["jobs"]]

    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "run.py", "-m", "launcher=slurm", "task=optimizer_scaling", "task.optimizer=gd,adam",
        "hydra.launcher.partition=gpu-long", "hydra.launcher.gpus_per_node=4",
        "hydra.launcher.tasks_per_node=4", "trainer.devices=4", "hydra.launcher.mem_gb=64",
        "hydra.launcher.account=lab", "hydra.launcher.qos=high", "hydra.launcher.timeout_min=720",
        "hydra.launcher.max_num_timeout=5", "hydra.launcher.array_parallelism=8",
        "hydra.launcher.setup=[source .venv/bin/activate]", *where(tmp_path)])
    runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
    assert seen["cluster"] == "slurm"
    assert seen["init"]["slurm_max_num_timeout"] == 5
    params = seen["params"]
    assert params["slurm_partition"] == "gpu-long"
    assert params["gpus_per_node"] == 4 and params["tasks_per_node"] == 4
    assert params["mem_gb"] == 64 and params["timeout_min"] == 720
    assert params["slurm_account"] == "lab" and params["slurm_qos"] == "high"
    assert params["slurm_array_parallelism"] == 8
    assert params["slurm_setup"] == ["source .venv/bin/activate"]
    assert len(seen["jobs"]) == 2  # one array task per job, each with its overrides
    assert any("task.optimizer=adam" in job[0] for job in seen["jobs"])


def test_a_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    base = [*TINY_SCALING, "task.optimizer=adam", "task.steps=12", "logger=csv",
            "callbacks.model_checkpoint.every_n_train_steps=4", *where(tmp_path)]
    straight = run_cli([*base, f"hydra.run.dir={tmp_path / 'straight'}"], tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed_dir = tmp_path / "killed"
    killed = run_cli([*base, f"hydra.run.dir={killed_dir}",
                      "+callbacks.crash._target_=helpers.CrashAtStep", "+callbacks.crash.step=9",
                      "+callbacks.crash.hard_kill=true"], tmp_path)
    assert killed.returncode == -9  # SIGKILL: no clean-up ran
    assert not (killed_dir / "results.json").exists()
    resumed = run_cli([*base, f"hydra.run.dir={killed_dir}"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((killed_dir / "results.json").read_text())
    assert b["resumed_from"].endswith("last.ckpt") and b["global_step"] == 12
    assert b["paper_metrics"]["test_loss"] == pytest.approx(a["paper_metrics"]["test_loss"],
                                                            rel=1e-12)


@pytest.mark.slow
def test_ddp_sim_trains_in_two_processes_and_rank_zero_writes(tmp_path):
    proc = run_cli(["trainer=ddp_sim", *TINY_SCALING, "logger=csv", "callbacks=spectra",
                    *where(tmp_path)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "optimizer_scaling")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["paper_metrics"]["test_loss"] > 0
    assert (run_dir / "spectra" / "matrices.npz").is_file()
