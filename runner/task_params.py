"""Turn the `task` node of the composed config into the task's validated parameter dataclass.

This is the one validation mechanism of task parameters: the composed `task` node (whatever set
it: the command line, `+task.key=...`, an experiment file, `conf/local/default.yaml`, a sweep) is
merged into the structured schema of `tasks/<name>/config.py:Config`. Unknown keys, wrong types
and choice keys (enums) outside their values are rejected there, range checks run in the
dataclass's `__post_init__`; each raises one ConfigError naming the key, where it was set and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from runner.config_sources import where_set
from runner.validation import ConfigError
from tasks.base.contract import META_KEYS, enum_type, param_class, resolved_params

__all__ = ["build_params", "resolved_params", "validate_node"]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _allowed(field: dataclasses.Field | None) -> str:
    """Return what a field accepts: the enum's values (plus null when optional), or its type."""
    if field is None:
        return "?"
    choices = enum_type(field)
    if choices is not None:
        optional = type(None) in typing.get_args(field.type)
        return "one of: " + ", ".join([str(m.value) for m in choices] + ["null"] * optional)
    return f"a value of type {_type_name(field.type)}"


def validate_node(raw: dict[str, Any], cls: type, prefix: str, owner: str) -> Any:
    """Return `raw` merged into the dataclass `cls` (keys, types, enum values, then its
    `__post_init__` range checks); a ConfigError names the key (`prefix` + name), where it was
    set and what is allowed. `owner` says whose key it is ("a parameter of task farad")."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.create(raw))
        return OmegaConf.to_object(merged)
    except ConfigKeyError as err:
        key = str(getattr(err, "key", None) or err)
        close = difflib.get_close_matches(key, list(fields), n=1)
        hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
        raise ConfigError(
            f"{prefix}{key} ({where_set(prefix + key)}) is not {owner}{hint}; "
            f"allowed: {', '.join(fields)}") from None
    except ValidationError as err:
        key = str(getattr(err, "full_key", None) or getattr(err, "key", "?")).split(".")[0]
        raise ConfigError(
            f"{prefix}{key}={raw.get(key)!r} ({where_set(prefix + key)}) is not allowed; "
            f"expected {_allowed(fields.get(key))}", key=prefix + key) from None
    except ConfigError as err:  # a range check of __post_init__
        if err.key is None:
            raise
        raise ConfigError(f"{err} ({where_set(err.key)})", key=err.key) from None


def build_params(task_cfg: DictConfig) -> Any:
    """Return the validated parameter dataclass for `task_cfg` (raises ConfigError)."""
    name = task_cfg.get("name")
    if not name:
        raise ConfigError("task.name is missing: every conf/task/<name>.yaml sets `name`")
    raw = {k: v for k, v in task_cfg.items() if k not in META_KEYS}
    return validate_node(raw, param_class(str(name)), "task.", f"a parameter of task {name}")
