"""launcher=slurm through a real SLURM controller (scripts/slurm_local.sh: one node, localhost),
as a user runs it: `python run.py -m launcher=slurm ...`. `make test-slurm` (marker `slurm`;
skipped without the cluster unless SPECTRUM_REQUIRE_SLURM=1).

The jobs are optimizer_scaling at its tiny size (seconds); the pre-emption and time-out tests
slow each step down with a sleeping callback (tests/slurm/slurm_helpers.py) so that the run is
still training when the high-priority job arrives or the time limit comes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from conftest import ROOT, TINY_SCALING, run_cli
from runner.report import report
from runner.wandb_records import find_run_file, read_records

pytestmark = pytest.mark.slurm

TIMING_SUFFIXES = ("wall_s", "wall_ms", "time_s")
# small jobs: one core each, 1 GB (the launcher's default asks 2 cores and 16 GB)
SMALL = ["launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def where(tmp_path: Path) -> list[str]:
    return [f"paths.log_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}"]


def only_dir(parent: Path) -> Path:
    dirs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def results_of(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/results.json"))}


def run_group(run_dir: Path) -> str:
    for record in read_records(find_run_file(run_dir)):
        if record.WhichOneof("record_type") == "run":
            return record.run.run_group
    raise AssertionError(f"no run record in {run_dir}")


def submitit_logs(sweep: Path) -> str:
    return "\n".join(p.read_text(errors="replace")
                     for p in sorted((sweep / ".submitit").glob("*/*_log.*")))


def paper(results: dict) -> dict:
    return {k: v for k, v in results["paper_metrics"].items() if not k.endswith(TIMING_SUFFIXES)}


def csv_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: v for k, v in row.items() if not k.endswith(TIMING_SUFFIXES)}
                for row in csv.DictReader(handle)]


def slurm(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})
    assert proc.returncode == 0, (args, proc.stderr)
    return proc.stdout.strip()


def test_a_sweep_runs_as_slurm_jobs_each_in_its_own_run_directory(tmp_path, slurm_env):
    started = time.time()
    proc = run_cli(["-m", *SMALL, *TINY_SCALING, "task.n_features=8,16,32", *where(tmp_path)],
                   tmp_path, timeout=400, env=slurm_env)
    took = time.time() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    assert f"sweep {sweep}: 3 completed" in proc.stdout
    assert "Submitit 'slurm' sweep output dir" in proc.stderr + proc.stdout
    results = results_of(sweep)
    assert sorted(results) == ["0", "1", "2"]
    assert all(r["status"] == "completed" for r in results.values())
    assert len({r["run_dir"] for r in results.values()}) == 3
    assert sorted(r["params"]["n_features"] for r in results.values()) == [8, 16, 32]
    # one SLURM array job, three tasks, each with its own folder, log and result
    tasks = sorted(p.name for p in (sweep / ".submitit").glob("*_*") if p.is_dir())
    assert len(tasks) == 3 and len({t.split("_")[0] for t in tasks}) == 1, tasks
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 3
    assert {run_group(sweep / job) for job in results} == {f"optimizer_scaling-{sweep.name}"}
    tables = report(sweep)
    summary = tables["optimizer_scaling"]  # the scaling exponent fitted over the three widths
    assert len(summary) == 1 and summary["alpha"].notna().all(), summary
    assert (sweep / "summary.md").is_file() and (sweep / "summary.csv").is_file()
    print(f"3-job sweep through SLURM: {took:.1f} s")


def test_a_failing_job_fails_alone_and_the_sweep_exits_non_zero(tmp_path, slurm_env):
    # job 1 crashes at step 3 of 10; jobs 0 and 2 never reach their crash step
    proc = run_cli(["-m", *SMALL, *TINY_SCALING, "logger=csv",
                    "+callbacks.crash._target_=helpers.CrashAtStep",
                    "+callbacks.crash.step=50,3,60", *where(tmp_path)], tmp_path, timeout=400,
                   env=slurm_env)
    assert proc.returncode != 0
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    assert f"sweep {sweep}: 2 completed, 1 failed" in proc.stdout, proc.stdout[-2000:]
    assert "1 job(s) failed: 1 (see their results.json)" in proc.stderr
    results = results_of(sweep)
    assert [results[k]["status"] for k in ("0", "1", "2")] == ["completed", "failed", "completed"]
    assert "RuntimeError: simulated crash at step 3" in results["1"]["error"]
    report(sweep)
    assert "Failed jobs" in (sweep / "summary.md").read_text()


# the pre-empted run: 80 steps of a quarter second each, a checkpoint every 5 steps
PREEMPT_RUN = [*TINY_SCALING, "task.steps=80", "task.optimizer=adam", "logger=default",
               "callbacks=checkpoint", "callbacks.model_checkpoint.every_n_train_steps=5",
               "+callbacks.slow._target_=slurm_helpers.SleepPerStep"]


def test_a_preempted_run_requeues_and_resumes_to_the_uninterrupted_result(tmp_path, slurm_env):
    cpus = slurm(slurm_env, "sinfo", "-h", "-o", "%c").split()[0]
    straight = run_cli([*PREEMPT_RUN, "+callbacks.slow.seconds=0", "print_results=false",
                        f"hydra.run.dir={tmp_path / 'straight'}", *where(tmp_path)], tmp_path,
                       timeout=300, env=slurm_env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    started = time.time()
    # the whole node, in the pre-emptible partition `low` (the default)
    sweep_proc = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"),
         "-m", "launcher=slurm", "hydra.launcher.partition=low",
         f"hydra.launcher.cpus_per_task={cpus}", "hydra.launcher.mem_gb=1", *PREEMPT_RUN,
         "+callbacks.slow.seconds=0.25", *where(tmp_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0",
             **slurm_env})
    try:
        run_dir = None
        deadline = time.time() + 180
        while time.time() < deadline:  # wait until it trains, with a checkpoint behind it
            found = list((tmp_path / "multirun").glob("optimizer_scaling/*/0/attempts.json"))
            if found:
                run_dir = found[0].parent
                attempts = json.loads(found[0].read_text())
                if (attempts and (attempts[-1]["global_step"] or 0) >= 15
                        and (run_dir / "checkpoints" / "last.ckpt").exists()):
                    break
            time.sleep(0.5)
        else:
            raise AssertionError("the low-priority run never reached step 15")
        preempted_at = time.time()
        high = slurm(slurm_env, "sbatch", "--parsable", "-p", "high", "-c", cpus, "--mem=100",
                     "-o", str(tmp_path / "high.out"), "--wrap", "sleep 1")
        output, _ = sweep_proc.communicate(timeout=300)
    finally:
        if sweep_proc.poll() is None:
            sweep_proc.kill()
    took = time.time() - started
    assert sweep_proc.returncode == 0, output[-3000:]
    sweep = run_dir.parent
    logs = submitit_logs(sweep)
    assert "Caught signal SIGUSR2" in logs and "this job is preempted" in logs, logs[-3000:]
    state = slurm(slurm_env, "scontrol", "show", "job", "-o", high)
    assert "JobState=COMPLETED" in state
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["status"] == "completed" and b["resumed_from"].endswith("checkpoints/last.ckpt")
    assert [x["status"] for x in b["attempts"]] == ["interrupted", "completed"]
    assert b["global_step"] == a["global_step"] == 80
    assert paper(b) == paper(a)  # exactly: the same numbers
    rows = csv_rows(run_dir)
    assert rows == csv_rows(tmp_path / "straight")  # no step lost, none logged twice
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 80
    run_id = (run_dir / "checkpoints" / "wandb_run_id").read_text().strip()
    folders = list((run_dir / "wandb").glob("offline-run-*"))
    assert [f.name.rsplit("-", 1)[-1] for f in folders] == [run_id]  # one W&B run, same id
    print(f"pre-emption cycle: {took:.1f} s from submission, {time.time() - preempted_at:.1f} s "
          "from the high-priority job to the resumed run's end")


# the timed-out runs: SLURM's limit is 1 minute, submitit's USR2 comes 5 s before it (SLURM checks
# time limits every 30 s: the signal arrives 25-55 s into the job, the kill 30-60 s after it).
# 400 steps, slowed to a quarter second each in the first `attempts` attempts (100 s: past the
# limit), at full speed afterwards (seconds); a checkpoint every 5 steps
TIMEOUT_RUN = [*TINY_SCALING, "task.steps=400", "task.optimizer=adam", "logger=csv",
               "callbacks=checkpoint", "callbacks.model_checkpoint.every_n_train_steps=5",
               "+callbacks.slow._target_=slurm_helpers.SleepPerStep"]
SUBMITIT_EVENTS = ("SIGUSR2", "remaining timeouts", "not requeued because: timed-out too many times")
SUBMITIT_TIME = re.compile(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\) - (.*)")


def log_events(log: str, *messages: str) -> list[tuple[float, str]]:
    """(time, message) of the submitit log lines that contain one of `messages`."""
    events = []
    for line in log.splitlines():
        match = SUBMITIT_TIME.search(line)
        if match and any(m in match[2] for m in messages):
            when = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append((when, match[2]))
    return events


def filled(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if v != ""} for row in rows]


def test_a_timed_out_run_is_requeued_max_num_timeout_times_and_resumes(tmp_path, slurm_env):
    straight = run_cli([*TIMEOUT_RUN, "+callbacks.slow.seconds=0", "print_results=false",
                        f"hydra.run.dir={tmp_path / 'straight'}", *where(tmp_path)], tmp_path,
                       timeout=300, env=slurm_env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    # job 0 is slow in its first attempt only: it times out once, is requeued, and completes;
    # job 1 is slow in its first two: it times out again, one time more than max_num_timeout=1
    submitted = time.time()
    proc = run_cli(["-m", *SMALL, "hydra.launcher.timeout_min=1",
                    "hydra.launcher.max_num_timeout=1", "hydra.launcher.signal_delay_s=5",
                    *TIMEOUT_RUN, "+callbacks.slow.seconds=0.25", "+callbacks.slow.attempts=1,2",
                    *where(tmp_path)], tmp_path, timeout=400, env=slurm_env)
    took = time.time() - submitted
    assert proc.returncode != 0  # job 1 failed
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    assert f"sweep {sweep}: 1 completed, 1 failed" in proc.stdout, proc.stdout[-2000:]
    results = results_of(sweep)
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    # job 0: requeued once after its time-out, resumed from last.ckpt, the uninterrupted result
    b = results["0"]
    assert b["status"] == "completed" and b["resumed_from"].endswith("checkpoints/last.ckpt")
    assert [x["status"] for x in b["attempts"]] == ["interrupted", "completed"]
    assert b["global_step"] == a["global_step"] == 400
    assert paper(b) == paper(a)  # exactly: the same numbers
    rows = csv_rows(sweep / "0")
    assert rows == csv_rows(tmp_path / "straight")  # no step lost, none logged twice
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == sorted(set(steps)) and len(steps) == 400
    # job 1: requeued once (resumed from last.ckpt), then timed out again: not requeued
    c = results["1"]
    assert c["status"] == "failed", c.get("error")
    assert "timed-out too many times" in c["error"], c["error"]
    assert [x["status"] for x in c["attempts"]] == ["interrupted", "failed"]
    assert c["attempts"][1]["resumed_from"].endswith("checkpoints/last.ckpt")
    rows = filled(csv_rows(sweep / "1"))  # it has no paper/ columns: compare the values only
    assert rows == filled(csv_rows(tmp_path / "straight"))[:len(rows)]  # as far as it got: same
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    assert steps == list(range(steps[0], steps[0] + len(steps)))  # none missing, none twice
    # submitit's log of each array task (its stdout; SLURM appends to it when the task restarts):
    # job 0 took one USR2 and was requeued; job 1 took two, and the second was not requeued
    events = {job: log_events(next((sweep / ".submitit").glob(f"*_{job}/*_log.out")).read_text(
        errors="replace"), *SUBMITIT_EVENTS) for job in ("0", "1")}
    told = {job: [next(k for k in SUBMITIT_EVENTS if k in m) for _, m in e]
            for job, e in events.items()}
    assert told["0"] == ["SIGUSR2", "remaining timeouts"], events["0"]
    assert told["1"] == ["SIGUSR2", "remaining timeouts", "SIGUSR2",
                         "not requeued because: timed-out too many times"], events["1"]
    messages = [m for e in events.values() for _, m in e]
    assert all("this job is timed-out" in m  # submitit's time-out path, not a pre-emption
               for m in messages if "SIGUSR2" in m), messages
    assert all("(0 remaining timeouts)" in m for m in messages if "remaining timeouts" in m)
    # SLURM's view: each array task was restarted exactly once
    array_id = next((sweep / ".submitit").glob("*_0")).name.split("_")[0]
    tasks = slurm(slurm_env, "scontrol", "show", "job", "-o", array_id).splitlines()
    assert len(tasks) == 2 and all(" Restarts=1 " in t for t in tasks), tasks
    for job in ("0", "1"):
        starts = [datetime.fromisoformat(x["started"]).timestamp() - submitted
                  for x in results[job]["attempts"]]
        ends = [s + x["wall_time_s"] for s, x in zip(starts, results[job]["attempts"])]
        sigs = [t - submitted for t, m in events[job] if "SIGUSR2" in m]
        print(f"job {job}: attempts start at {', '.join(f'{s:.0f}' for s in starts)} s, "
              f"USR2 at {', '.join(f'{s:.0f}' for s in sigs)} s, attempts end at "
              f"{', '.join(f'{e:.0f}' for e in ends)} s after submission")
    print(f"time-out sweep: {took:.1f} s from submission to the sweep's end")


# DDP under SLURM: 2 SLURM tasks on the node, each one process of trainer=ddp (gloo on CPU).
# optimizer_scaling updates its readouts by hand (manual optimisation, no backward: DDP reduces
# nothing) from the same full batch on every rank, so each rank computes what a single process
# computes: the paper metrics are compared exactly
DDP_RUN = [*TINY_SCALING, "logger=default", "callbacks=default"]
AUDIT = ROOT / "tests" / "slurm" / "write_audit"  # sitecustomize.py: who writes what


def npz_rows(run_dir: Path) -> dict[str, dict]:
    import numpy as np

    out = {}
    for path in sorted((run_dir / "spectra").glob("*.npz")):
        with np.load(path) as data:
            out[path.name] = {k: data[k] for k in data.files}
    return out


def test_ddp_as_two_slurm_tasks_matches_one_process_and_rank_zero_writes(tmp_path, slurm_env):
    straight = run_cli([*DDP_RUN, "print_results=false", f"hydra.run.dir={tmp_path / 'straight'}",
                        *where(tmp_path)], tmp_path, timeout=300, env=slurm_env)
    assert straight.returncode == 0, straight.stderr[-3000:]
    audit = tmp_path / "audit"
    audit.mkdir()
    env = {**slurm_env, "PYTHONPATH": f"{AUDIT}{os.pathsep}{slurm_env['PYTHONPATH']}",
           "SPECTRUM_WRITE_AUDIT_ROOT": str(tmp_path / "multirun"),
           "SPECTRUM_WRITE_AUDIT_LOG": str(audit)}
    started = time.time()
    proc = run_cli(["-m", *SMALL, "hydra.launcher.tasks_per_node=2", "trainer=ddp",
                    "trainer.devices=2", "trainer.accelerator=cpu", *DDP_RUN, *where(tmp_path)],
                   tmp_path, timeout=400, env=env)
    took = time.time() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = only_dir(tmp_path / "multirun" / "optimizer_scaling")
    assert f"sweep {sweep}: 1 completed" in proc.stdout, proc.stdout[-2000:]
    run_dir = sweep / "0"
    # both SLURM tasks ran, as the two ranks of one DDP run
    logs = {t: next((sweep / ".submitit").glob(f"*/*_{t}_log.out")).read_text(errors="replace")
            for t in (0, 1)}
    assert "global_rank=1(2)" in logs[1] and "GLOBAL_RANK: 1, MEMBER: 2/2" in logs[1], logs[1]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in (run_dir / "run.log").read_text()
    a = json.loads((tmp_path / "straight" / "results.json").read_text())
    b = json.loads((run_dir / "results.json").read_text())
    assert b["status"] == "completed" and b["global_step"] == a["global_step"] == 10
    assert paper(b) == paper(a)  # exactly: the same numbers
    assert [x["status"] for x in b["attempts"]] == ["completed"]  # one attempt, one writer
    assert json.loads((run_dir / "attempts.json").read_text()) == b["attempts"]
    # metrics.csv: each step's train row once (two writers would append every row twice)
    rows = [r for r in csv_rows(run_dir) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == list(range(10))
    assert [r["train/loss"] for r in rows] == [
        r["train/loss"] for r in csv_rows(tmp_path / "straight") if r.get("train/loss")]
    # one set of spectra: the same probes, each snapshot step once, the same spectra at them
    import numpy as np

    ours, theirs = npz_rows(run_dir), npz_rows(tmp_path / "straight")
    assert sorted(ours) == sorted(theirs) and ours, (sorted(ours), sorted(theirs))
    for name, arrays in ours.items():
        for key in [k for k in arrays if k.endswith("__steps")]:
            values, steps = arrays[key.removesuffix("__steps")], arrays[key].tolist()
            other_steps = theirs[name][key].tolist()
            assert steps == sorted(set(steps)) and len(steps) == len(values), (name, key, steps)
            common = sorted(set(steps) & set(other_steps))
            assert common, (name, key, steps, other_steps)
            for step in common:  # the schedule thins itself by wall time: compare shared steps
                other = theirs[name][key.removesuffix("__steps")][other_steps.index(step)]
                assert np.array_equal(values[steps.index(step)], other, equal_nan=True)
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == sorted(
        p.name for p in (tmp_path / "straight" / "plots").iterdir())
    run_id = (run_dir / "checkpoints" / "wandb_run_id").read_text().strip()
    assert [f.name.rsplit("-", 1)[-1] for f in (run_dir / "wandb").glob("offline-run-*")] == [run_id]
    # the write audit: every write into the run directory came from SLURM task 0, except Hydra's
    # job log, which Hydra opens (append) in every task before the job starts (rank 1 closes it
    # unused: runner/run.py detach_run_dir_log) and the run directory itself (Hydra, the runner)
    writes = [line.split("\t") for p in audit.glob("*.tsv") for line in p.read_text().splitlines()]
    in_run = [w for w in writes if Path(w[4]) == run_dir or run_dir in Path(w[4]).parents]
    by_rank = {rank: [w for w in in_run if w[0] == rank] for rank in {w[0] for w in in_run}}
    assert set(by_rank) == {"0", "1"}, sorted(by_rank)
    allowed = [w for w in by_rank["1"] if Path(w[4]) == run_dir
               or (Path(w[4]) == run_dir / "run.log" and w[2] == "open" and w[3] == "a")]
    assert by_rank["1"] == allowed, [w for w in by_rank["1"] if w not in allowed]
    written0 = {Path(w[4]).relative_to(run_dir).parts[0] for w in by_rank["0"]
                if Path(w[4]) != run_dir}
    assert {"results.json", "attempts.json", ".hydra", "metrics.csv", "spectra", "plots",
            "checkpoints", "wandb"} <= written0, sorted(written0)
    print(f"2-task DDP run through SLURM: {took:.1f} s; rank 1 wrote {len(by_rank['1'])} "
          f"entries (all allowed), rank 0 {len(by_rank['0'])}")
