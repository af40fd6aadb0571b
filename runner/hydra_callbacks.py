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
