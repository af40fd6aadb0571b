"""The task contract: what every package under `tasks/` provides, and the shared pieces it uses.

- `contract`: the protocol (`TaskModule`, `TaskData`, `task_parts`) that the conformance test
  checks for every `conf/task/<name>.yaml`;
- `data`: `TensorDataModule`, the data-module base (a dict of tensors built once per generating
  config and data code, cached under `paths.data_dir`), and its cache `cached_tensors`;
- `checkpoint`: the one cache of trained models, `cached_module` (a locked, atomically written,
  SHA-1-checked checkpoint per key: the small LM, mixat's stages, mamba_modulation's backbone);
- `aggregate`: the helpers every `summarize()` uses (runs table, mean ± sd over seeds,
  seed-paired differences, power-law exponent fits).

The names below are imported on first use: validating a task's parameters
(`tasks/<name>/config.py` imports `tasks.base.contract`) must not load Lightning (`data`) or
pandas (`aggregate`).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"fit_power_law": "aggregate", "mean_sd": "aggregate", "paired_difference": "aggregate",
          "runs_table": "aggregate", "TensorDataModule": "data", "cached_tensors": "data",
          "data_code_hash": "data", "cached_module": "checkpoint"}

__all__ = ["TensorDataModule", "cached_module", "cached_tensors", "data_code_hash",
           "fit_power_law", "mean_sd", "paired_difference", "runs_table"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"tasks.base.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tasks.base' has no attribute {name!r}")
