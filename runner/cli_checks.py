"""Early command-line checks that Hydra's own messages leave vague.

Hydra rejects `task.n_featurs=3` with "Key 'n_featurs' is not in struct"; this check runs first
and names the key, the closest valid key, and every key the selected task accepts.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml


def _default_task(conf_dir: Path) -> str | None:
    config = yaml.safe_load((conf_dir / "config.yaml").read_text())
    for entry in config.get("defaults", []):
        if isinstance(entry, dict) and "task" in entry:
            return entry["task"]
    return None


def _experiment_task(conf_dir: Path, experiment: str) -> str | None:
    path = conf_dir / "experiment" / f"{experiment}.yaml"
    if not path.is_file():
        return None  # Hydra reports the missing option with the available ones
    for entry in (yaml.safe_load(path.read_text()) or {}).get("defaults", []):
        if isinstance(entry, dict) and "override /task" in entry:
            return entry["override /task"]
    return None


def selected_task(argv: list[str], conf_dir: Path) -> str | None:
    """Return the task that `argv` selects (task=..., else the experiment's, else the default)."""
    task = experiment = None
    for arg in argv:
        if arg.startswith("task="):
            task = arg.split("=", 1)[1]
        elif arg.startswith("experiment="):
            experiment = arg.split("=", 1)[1]
    if task is None and experiment:
        task = _experiment_task(conf_dir, experiment)
    return task or _default_task(conf_dir)


def check_task_keys(argv: list[str], conf_dir: Path) -> str | None:
    """Return an error message for a `task.<key>=` override the selected task lacks, else None."""
    task = selected_task(argv, conf_dir)
    if task is None or "," in task:
        return None
    path = conf_dir / "task" / f"{task}.yaml"
    if not path.is_file():
        return None
    allowed = list((yaml.safe_load(path.read_text()) or {}).keys())
    for arg in argv:
        if not arg.startswith("task.") or "=" not in arg:
            continue
        key = arg[len("task."):].split("=", 1)[0].split(".", 1)[0]
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean task.{close[0]}?)" if close else ""
            return (f"task.{key} is not a key of task {task}{hint}; allowed: "
                    + ", ".join(allowed))
    return None
