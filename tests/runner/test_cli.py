"""run.py as a user runs it: subprocesses for the CLI, sweeps, bad input and reports."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
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
    """A run with the default loggers and callbacks, with an `srun` on PATH: its files, its
    tables, and none of the device lines or the srun warning that do not apply to it."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 0\n")
    (fake_bin / "srun").chmod(0o755)
    env = {"PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    proc = run_cli([*TINY_SCALING, "task.optimizer=natural_gradient", *where(tmp_path)], tmp_path,
                   env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    for noise in ("GPU available: False", "TPU available", "`srun` command", "litlogger",
                  "`weights_only` was not set"):
        assert noise not in output, output
    assert "`Trainer.fit` stopped: `max_steps=10` reached." in output  # real lines stay
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
    # each key with its value and its yaml comment (the default task is farad)
    assert any(line.startswith("  n_refs: 16 ") and line.endswith(
        "# M, Fourier clouds per step; b = mean_m f(x_ref_m)") for line in lines), lines
    assert any(line.startswith("seed: 0 ") and "# seeds python, numpy and torch" in line
               for line in lines)
    job = run_cli(["--cfg", "job", "task=optimizer_scaling", "task.optimizer=adam"], tmp_path)
    assert job.returncode == 0
    assert "optimizer: adam" in job.stdout and "n_features: 256" in job.stdout
    hydra_help = run_cli(["--hydra-help"], tmp_path)
    assert hydra_help.returncode == 0 and "== Flags ==" in hydra_help.stdout


def test_help_with_overrides_shows_the_composed_config_and_who_set_each_key(tmp_path):
    helped = run_cli(["task=optimizer_scaling", "task.optimizer=adam", "trainer=debug",
                      "launcher=slurm", "--help"], tmp_path)
    assert helped.returncode == 0, helped.stderr[-2000:]
    lines = helped.stdout.splitlines()
    assert ("task: chefnmr, ei_network, farad, linearization, mamba_modulation, mixat, "
            "optimizer_scaling, spectral_ssl, two_step_gd") in lines

    def line_of(prefix: str) -> str:
        found = [line for line in lines if line.startswith(prefix)]
        assert len(found) == 1, (prefix, found)
        return found[0]

    # a task key: its value and the comment of conf/task/optimizer_scaling.yaml
    assert line_of("  n_features: 256 ").endswith(
        "# N, width of the random-feature map (first N rows of F_max)")
    assert line_of("task:  ").endswith("# conf/task/optimizer_scaling.yaml")
    # set by an override / by a later file: said after the comment
    assert line_of("  optimizer: adam ").endswith(
        "# gd | diag | adam | matrix_sign | natural_gradient [override task.optimizer=adam]")
    assert line_of("  max_steps: 10 ").endswith("# at most ten steps [conf/trainer/debug.yaml]")
    assert line_of("  accelerator: cpu ").endswith("# cpu | gpu | auto")
    # the launcher's own keys with their comments
    assert line_of("    partition: null ").endswith("# SLURM partition (-p)")
    assert "$" not in line_of("  data_dir: ").replace("${paths.root_dir}", "")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=optimiser_scaling", "task=optimiser_scaling (set by the override "
                                   "task=optimiser_scaling) is not a config of group task: there "
                                   "is no conf/task/optimiser_scaling.yaml (did you mean "
                                   "task=optimizer_scaling?); allowed: chefnmr, ei_network, "
                                   "farad, linearization, mamba_modulation, mixat, "
                                   "optimizer_scaling, spectral_ssl, two_step_gd"),
        # Hydra itself refuses to override a key the task yaml lacks: one line naming it
        ("task.n_featurs=3", "task.n_featurs (set by the override task.n_featurs=3) is not a key "
                             "of the composed config (did you mean task.n_features?); allowed: "
                             "name, module, data, max_steps, optimizer, n_features, s,"),
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
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line


EXPERIMENTS_LISTED = ("allowed: chefnmr/full, chefnmr/overfit, chefnmr/size_sweep, "
                      "ei_network/phase_coarse, ei_network/phase_full")
# issue 13 item 7: bad values outside task.* (trainer, logger, callbacks, launcher, hydra, the
# top-level keys), and those Hydra itself rejects before the runner sees the config
BAD_GROUP_VALUES = [
    (["seed=abc"], "config error: seed='abc' (set by the override seed=abc) is not allowed; "
                   "expected a value of type int"),
    (["threads=0"], "config error: threads=0 is out of range; allowed: [1, inf) (set by the "
                    "override threads=0)"),
    (["trainer.max_steps=-5"], "config error: trainer.max_steps=-5 is out of range; allowed: -1 "
                               "(no limit) or an integer >= 0 (set by the override "
                               "trainer.max_steps=-5)"),
    (["trainer.precision=17"], "config error: trainer.precision=17 is not allowed; choose one "
                               "of: 32-true, 64-true, 16-mixed, bf16-mixed, 16-true, bf16-true, "
                               "transformer-engine, transformer-engine-float16, 64, 32, 16, bf16 "
                               "(set by the override trainer.precision=17)"),
    (["+trainer.max_stepz=3"], "config error: trainer.max_stepz (set by the override "
                               "+trainer.max_stepz=3) is not an argument of the Lightning Trainer "
                               "(did you mean trainer.max_steps?); allowed: accelerator, "),
    (["hydra.run.dir=/proc/x"], "config error: hydra.run.dir=/proc/x (set by the override "
                                "hydra.run.dir=/proc/x) cannot be created (FileNotFoundError: No "
                                "such file or directory: '/proc/x'); allowed: a directory this "
                                "user can create and write to"),
    (["-m", "task.n_features=16,32", "hydra.sweep.dir=/proc/y"],
     "config error: hydra.sweep.dir=/proc/y (set by the override hydra.sweep.dir=/proc/y) cannot "
     "be created (FileNotFoundError: No such file or directory: '/proc/y')"),
    (["experiment=missing"], "config error: experiment=missing (set by the override "
                             "experiment=missing) is not a config of group experiment: there is "
                             "no conf/experiment/missing.yaml; " + EXPERIMENTS_LISTED),
    (["experiment=optimizer_scaling/alpha_tabel"],
     "config error: experiment=optimizer_scaling/alpha_tabel (set by the override "
     "experiment=optimizer_scaling/alpha_tabel) is not a config of group experiment: there is no "
     "conf/experiment/optimizer_scaling/alpha_tabel.yaml (did you mean "
     "experiment=optimizer_scaling/alpha_table?); " + EXPERIMENTS_LISTED),
    (["+callbacks.hessian_spectrum.every_n_steps=5"],
     "config error: callbacks.hessian_spectrum (set by the override "
     "+callbacks.hessian_spectrum.every_n_steps=5) is not a callback of this run (it has no "
     "_target_, so it would do nothing); it is in callbacks=spectra: add callbacks=spectra to the "
     "command; the callbacks of this run: model_checkpoint, weight_spectrum, feature_spectrum, "
     "matrix_spectrum"),
    (["callbacks.hessian_spectrum.every_n_steps=5"],
     "config error: callbacks.hessian_spectrum (set by the override "
     "callbacks.hessian_spectrum.every_n_steps=5) is not a key of the composed config (did you "
     "mean callbacks.weight_spectrum?); it is in callbacks=spectra: add callbacks=spectra to the "
     "command; allowed: model_checkpoint, weight_spectrum, feature_spectrum, matrix_spectrum"),
    (["logger.wandb.mode=foo"], "config error: logger.wandb.mode='foo' is not allowed; choose one "
                                "of: offline, online, disabled, shared, dryrun, run (set by the "
                                "override logger.wandb.mode=foo)"),
    (["logger=csv", "logger.wandb.mode=offline"],
     "config error: logger.wandb (set by the override logger.wandb.mode=offline) is not a key of "
     "the composed config; it is in logger=default and logger=wandb: add logger=default to the "
     "command; allowed: csv"),
    (["logger.csv.flush_logs_every_n_steps=0"],
     "config error: logger.csv.flush_logs_every_n_steps=0 is out of range; allowed: [1, inf) (set "
     "by the override logger.csv.flush_logs_every_n_steps=0)"),
    (["launcher=local", "hydra.launcher.timeout_min=abc"],
     "config error: hydra.launcher.timeout_min=abc (set by the override "
     "hydra.launcher.timeout_min=abc) is not allowed: Value 'abc' of type 'str' could not be "
     "converted to Integer"),
    (["logger=foo"], "config error: logger=foo (set by the override logger=foo) is not a config "
                     "of group logger: there is no conf/logger/foo.yaml; allowed: csv, default, "
                     "none, tensorboard, wandb"),
    (["--help", "task=optimiser_scaling"], "config error: task=optimiser_scaling (set by the "
                                           "override task=optimiser_scaling) is not a config"),
]


@pytest.mark.parametrize(("args", "message"), BAD_GROUP_VALUES,
                         ids=[" ".join(a) for a, _ in BAD_GROUP_VALUES])
def test_bad_group_and_hydra_values_give_one_line_naming_the_key(tmp_path, args, message):
    flags = [a for a in args if a.startswith("-")]
    proc = run_cli([*flags, "task=optimizer_scaling", *[a for a in args if a not in flags],
                    *where(tmp_path)], tmp_path, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no traceback
    assert "Traceback" not in proc.stderr
    for folder in ("outputs", "multirun"):  # no run (sweep) directory left behind
        left = tmp_path / folder
        assert not left.exists() or not list(left.rglob("*.*")), list(left.rglob("*"))
    assert not Path("/proc/x").exists()


def test_hydra_full_error_still_shows_hydras_traceback(tmp_path):
    proc = run_cli(["experiment=missing", *where(tmp_path)], tmp_path,
                   env={"HYDRA_FULL_ERROR": "1"})
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "MissingConfigException" in proc.stderr


def test_a_failing_job_is_still_reported_by_hydra(tmp_path):
    """A job's own error (not a config error) keeps Hydra's report: HYDRA_FULL_ERROR, set while
    Hydra composes the config, is put back before the job starts."""
    proc = run_cli([*TINY_SCALING, "logger=csv", "callbacks=none", "+callbacks.crash._target_="
                    "helpers.CrashAtStep", "+callbacks.crash.step=2", *where(tmp_path)], tmp_path)
    assert proc.returncode == 1
    assert "RuntimeError: simulated crash at step 2" in proc.stderr
    assert "Set the environment variable HYDRA_FULL_ERROR=1" in proc.stderr
    run_dir = only_dir(tmp_path / "outputs" / "optimizer_scaling")
    assert json.loads((run_dir / "results.json").read_text())["status"] == "failed"


def test_help_and_config_errors_import_no_torch_lightning_or_wandb(tmp_path):
    """What keeps `--help` and a config error fast (issue 13: 7 s of Lightning's import)."""
    for args in (["--help"], ["task=optimizer_scaling", "task.n_features=-1"], ["seed=abc"],
                 ["trainer.precision=17"], ["logger.wandb.mode=foo"], ["experiment=missing"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "run.py"), *args,
                               *where(tmp_path)], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120)
        modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                   if line.startswith("import time:")}
        assert modules, proc.stderr[-2000:]
        heavy = sorted(m for m in modules if m.split(".")[0] in (
            "torch", "pytorch_lightning", "lightning_fabric", "wandb", "pandas"))
        assert not heavy, (args, heavy[:10])


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
    # the launcher's checks ask sinfo for the partitions (runner/hydra_callbacks.py:SlurmCheck)
    fake_slurm(tmp_path / "bin", monkeypatch, partitions="gpu-long cpu")
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


def fake_slurm(folder: Path, monkeypatch=None, partitions: str = "debug") -> dict[str, str]:
    """Put stand-ins for sbatch and sinfo (`sinfo -h -o %R` lists `partitions`) first on PATH;
    return the environment for run_cli (and set it with `monkeypatch`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("sinfo", f"echo {partitions} | tr ' ' '\\n'"), ("sbatch", "exit 1")):
        (folder / name).write_text(f"#!/bin/sh\n{body}\n")
        (folder / name).chmod(0o755)
    path = f"{folder}{os.pathsep}{os.environ['PATH']}"
    if monkeypatch is not None:
        monkeypatch.setenv("PATH", path)
    return {"PATH": path}


BAD_SLURM = [  # (args, fake SLURM on PATH, the message): all before anything is submitted
    (["launcher=slurm"], True,
     "config error: launcher=slurm (set by the override launcher=slurm) needs a multirun: add -m "
     "(or hydra.mode=MULTIRUN) to the command; without it Hydra runs the job on this machine and "
     "submits nothing"),
    (["-m", "launcher=slurm", "trainer=ddp", "trainer.accelerator=cpu"], True,
     "config error: hydra.launcher.tasks_per_node=1 (set in conf/launcher/slurm.yaml) differs "
     "from trainer.devices=2 (the default in conf/trainer/ddp.yaml): SLURM starts one process per "
     "task and each is one of the run's processes; allowed: equal values, e.g. "
     "hydra.launcher.tasks_per_node=2"),
    (["-m", "launcher=slurm", "hydra.launcher.nodes=2"], True,
     "config error: hydra.launcher.nodes=2 (set by the override hydra.launcher.nodes=2) differs "
     "from trainer.num_nodes=1 (the default in conf/trainer/default.yaml)"),
    (["-m", "launcher=slurm", "hydra.launcher.partition=gpu"], True,
     "config error: hydra.launcher.partition=gpu (set by the override "
     "hydra.launcher.partition=gpu) is not a partition of this SLURM cluster; allowed: debug, "
     "long"),
    (["-m", "launcher=slurm"], False,
     "config error: launcher=slurm needs SLURM, but this machine has no sbatch/sinfo on PATH "
     "(SLURM is not installed here); allowed: a SLURM login node, a local cluster "
     "(scripts/slurm_local.sh start"),
]


@pytest.mark.parametrize(("args", "has_slurm", "message"), BAD_SLURM,
                         ids=[" ".join(a) + ("" if s else " (no SLURM)") for a, s, _ in BAD_SLURM])
def test_bad_slurm_input_is_refused_before_anything_is_submitted(tmp_path, args, has_slurm,
                                                                 message):
    if has_slurm:
        env = fake_slurm(tmp_path / "bin", partitions="debug long")
    else:  # a PATH without SLURM (run_cli starts python by its full path)
        (tmp_path / "empty").mkdir()
        env = {"PATH": str(tmp_path / "empty")}
    flags = [a for a in args if a.startswith("-")]
    proc = run_cli([*flags, *TINY_SCALING, "task.optimizer=gd,adam" if flags else "seed=1",
                    *[a for a in args if a not in flags], *where(tmp_path)], tmp_path,
                   timeout=120, env=env)
    assert proc.returncode == 1
    assert proc.stderr.startswith(message), proc.stderr[-3000:]
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr  # one line, no traceback
    for folder in ("outputs", "multirun"):  # nothing ran, nothing was submitted
        left = tmp_path / folder
        assert not left.exists() or not list(left.rglob("*.*")), list(left.rglob("*"))


@pytest.mark.slow
def test_ddp_sim_trains_in_two_processes_and_rank_zero_writes(tmp_path):
    proc = run_cli(["trainer=ddp_sim", *TINY_SCALING, "logger=csv", "callbacks=spectra",
                    *where(tmp_path)], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = only_dir(tmp_path / "outputs" / "optimizer_scaling")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and results["paper_metrics"]["test_loss"] > 0
    assert (run_dir / "spectra" / "matrices.npz").is_file()
