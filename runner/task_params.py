"""Turn the `task` node of the composed config into the task's validated parameter dataclass.

Convention: `conf/task/<name>.yaml` holds `name`, `module`, `data` (with `_target_`), the
trainer budget (`max_steps` / `max_epochs`), and the paper's parameters. The parameters are
checked against the dataclass `Config` in `tasks/<name>/config.py`: unknown keys, wrong types
and (in its `__post_init__`) impossible values raise ConfigError before any work.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from runner.validation import ConfigError

META_KEYS = ("name", "module", "data", "max_steps", "max_epochs")


def task_package(task_cfg: DictConfig) -> str:
    """Return the import path of the task's package, `tasks.<name>`."""
    name = task_cfg.get("name")
    if not name:
        raise ConfigError("task.name is missing: every conf/task/<name>.yaml sets `name`")
    return f"tasks.{name}"


def param_class(task_cfg: DictConfig) -> type:
    """Return the task's parameter dataclass `tasks.<name>.config.Config`."""
    module = importlib.import_module(task_package(task_cfg) + ".config")
    return module.Config


def build_params(task_cfg: DictConfig) -> Any:
    """Return the validated parameter dataclass for `task_cfg` (raises ConfigError)."""
    cls = param_class(task_cfg)
    raw = {k: v for k, v in task_cfg.items() if k not in META_KEYS}
    schema = OmegaConf.structured(cls)
    allowed = [f.name for f in dataclasses.fields(cls)]
    try:
        merged = OmegaConf.merge(schema, OmegaConf.create(raw))
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        key = getattr(err, "key", None) or str(err)
        raise ConfigError(
            f"task.{key} is not a parameter of task {task_cfg.name}; allowed: {', '.join(allowed)}"
        ) from None
    except ValidationError as err:
        key = getattr(err, "full_key", None) or getattr(err, "key", "?")
        field = {f.name: f for f in dataclasses.fields(cls)}.get(str(key))
        expected = getattr(field.type, "__name__", str(field.type)) if field else "?"
        value = raw.get(str(key))
        raise ConfigError(
            f"task.{key}={value!r} has the wrong type; expected {expected}"
        ) from None
