"""The task contract: what every package under `tasks/` provides, and the shared pieces it uses.

- `contract`: the protocol (`TaskModule`, `TaskData`, `task_parts`) that the conformance test
  checks for every `conf/task/<name>.yaml`;
- `data`: `TensorDataModule`, the data-module base (a dict of tensors built once per generating
  config and data code, cached under `paths.data_dir`), and its cache `cached_tensors`;
- `aggregate`: the helpers every `summarize()` uses (runs table, mean ± sd over seeds,
  seed-paired differences, power-law exponent fits).
"""

from tasks.base.aggregate import fit_power_law, mean_sd, paired_difference, runs_table
from tasks.base.data import TensorDataModule, cached_tensors, data_code_hash

__all__ = ["TensorDataModule", "cached_tensors", "data_code_hash", "fit_power_law", "mean_sd",
           "paired_difference", "runs_table"]
