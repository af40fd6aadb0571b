"""Hydra callbacks: the run (sweep) directory checked before Hydra makes it; a summary line at
the end of a sweep, non-zero exit if any job failed."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner.validation import ConfigError


def _unwritable(path: Path) -> str | None:
    """Return why the directory `path` cannot be made or written to (None when it can); leaves
    nothing behind (the first missing folder is made and removed again: Hydra makes it next)."""
    missing = None
    for folder in [path, *path.parents]:
        if folder.exists():
            break
        missing = folder
    try:
        if missing is None:
            if not path.is_dir():
                return f"{path} exists and is not a directory"
            tempfile.TemporaryFile(dir=path).close()
        else:
            missing.mkdir()
            try:
                missing.rmdir()
            except OSError:  # another job made something inside it meanwhile
                pass
    except OSError as err:
        return f"{type(err).__name__}: {err.strerror or err}" + (
            f": {err.filename!r}" if err.filename else "")
    return None


def check_output_dir(config: DictConfig, key: str) -> None:
    """Raise ConfigError when the directory at `key` (hydra.run.dir, hydra.sweep.dir) cannot
    be made, naming the key, where it was set and what is allowed."""
    value = OmegaConf.select(config, key)
    why = _unwritable(Path(os.path.abspath(os.path.expanduser(str(value)))))
    if why is not None:
        from runner.config_sources import where_set

        HydraConfig.instance().set_config(config)  # for where_set (Hydra sets it next anyway)
        raise ConfigError(f"{key}={value} ({where_set(key)}) cannot be created ({why}); allowed: "
                          "a directory this user can create and write to (or paths.log_dir, "
                          "the parent of outputs/ and multirun/)", key=key)


class RunDirCheck(Callback):
    """Before any work: refuse a run directory (sweep directory) that cannot be made, with one
    line (Hydra itself would fail making it with a chained traceback that never names the key).
    Raised as SystemExit: Hydra turns other callback exceptions into warnings."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_output_dir(config, "hydra.run.dir")
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_output_dir(config, "hydra.sweep.dir")
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None


class SweepSummary(Callback):
    """Print how many jobs of the sweep completed and failed; exit 1 if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses: dict[str, list[str]] = {}
        for path in sorted(sweep_dir.rglob("results.json")):
            try:
                status = json.loads(path.read_text()).get("status", "unknown")
            except (OSError, json.JSONDecodeError):
                status = "unreadable"
            statuses.setdefault(status, []).append(str(path.parent.relative_to(sweep_dir)))
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items())) or "no jobs"
        print(f"sweep {sweep_dir}: {counts}")
        print(f"aggregate with: python -m runner.report {sweep_dir}")
        failed = statuses.get("failed", [])
        if failed:  # SystemExit: Hydra turns other callback exceptions into warnings
            raise SystemExit(
                f"{len(failed)} job(s) failed: {', '.join(failed)} (see their results.json)"
            )


def _swept_keys(config: DictConfig) -> set[str]:
    """Return the keys the command line sweeps (`key=a,b`, `range(...)`): in a multirun the
    config Hydra hands the callbacks holds their defaults, not the jobs' values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra parsed them already; nothing to add here
        return set()
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _slurm_partitions() -> list[str]:
    """Return the partitions of the SLURM cluster this machine reaches (`sinfo`); raise
    ConfigError when SLURM is not installed or its controller does not answer."""
    import shutil
    import subprocess

    how = ("allowed: a SLURM login node, a local cluster (scripts/slurm_local.sh start, then "
           "source the env.sh it prints), or launcher=local / launcher=basic on this machine")
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        raise ConfigError("launcher=slurm needs SLURM, but this machine has no sbatch/sinfo on "
                          f"PATH (SLURM is not installed here); {how}", key="launcher")
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ConfigError(f"launcher=slurm: sinfo did not answer ({type(err).__name__}: {err}); "
                          f"{how}", key="launcher") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
        why = lines[-1].removeprefix("sinfo: ") if lines else f"exit code {proc.returncode}"
        hint = "; is SLURM_CONF set?" if not os.environ.get("SLURM_CONF") else ""
        raise ConfigError(f"launcher=slurm: the SLURM controller does not answer (sinfo: {why}"
                          f"{hint}); {how}", key="launcher")
    return sorted({p.strip() for p in proc.stdout.split() if p.strip()})


def check_slurm(config: DictConfig) -> None:
    """Raise ConfigError, naming the keys, when a launcher=slurm sweep cannot run as asked: the
    SLURM tasks of a job are the processes of its run (hydra.launcher.tasks_per_node must equal
    trainer.devices, hydra.launcher.nodes trainer.num_nodes), the partition must exist, and
    SLURM must be reachable from this machine."""
    from runner.config_sources import where_set

    HydraConfig.instance().set_config(config)  # for where_set (Hydra sets it next anyway)
    swept = _swept_keys(config)
    for launcher_key, trainer_key in (("tasks_per_node", "devices"), ("nodes", "num_nodes")):
        ours = OmegaConf.select(config, f"hydra.launcher.{launcher_key}")
        theirs = OmegaConf.select(config, f"trainer.{trainer_key}")
        if f"trainer.{trainer_key}" in swept or f"hydra.launcher.{launcher_key}" in swept:
            continue
        if isinstance(ours, int) and isinstance(theirs, int) and ours != theirs:
            raise ConfigError(
                f"hydra.launcher.{launcher_key}={ours} ({where_set(f'hydra.launcher.{launcher_key}')})"
                f" differs from trainer.{trainer_key}={theirs} ({where_set(f'trainer.{trainer_key}')})"
                f": SLURM starts one process per task and each is one of the run's processes; "
                f"allowed: equal values, e.g. hydra.launcher.{launcher_key}={theirs}",
                key=f"hydra.launcher.{launcher_key}")
    partitions = _slurm_partitions()
    wanted = OmegaConf.select(config, "hydra.launcher.partition")
    if wanted is not None and "hydra.launcher.partition" not in swept:
        unknown = [p for p in str(wanted).split(",") if p.strip() not in partitions]
        if unknown:
            raise ConfigError(
                f"hydra.launcher.partition={wanted} ({where_set('hydra.launcher.partition')}) is "
                f"not a partition of this SLURM cluster; allowed: {', '.join(partitions)}",
                key="hydra.launcher.partition")


class SlurmCheck(Callback):
    """launcher=slurm (conf/launcher/slurm.yaml adds this callback): refuse, before anything is
    submitted, a run without -m (Hydra would run it here, not on SLURM) and a sweep that
    check_slurm refuses, with one line. Raised as SystemExit, as RunDirCheck does."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from runner.config_sources import where_set

        HydraConfig.instance().set_config(config)
        raise SystemExit(
            f"config error: launcher=slurm ({where_set('launcher')}) needs a multirun: add -m "
            "(or hydra.mode=MULTIRUN) to the command; without it Hydra runs the job on this "
            "machine and submits nothing; allowed: -m with launcher=slurm, or launcher=basic "
            "for a run here")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_slurm(config)
        except ConfigError as err:
            raise SystemExit(f"config error: {err}") from None
