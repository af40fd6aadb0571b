"""The protocol every task satisfies (DESIGN.md §4); `tests/tasks/test_contract.py` checks it
for every `conf/task/<name>.yaml`.

A task `<name>` is
- `conf/task/<name>.yaml`: `name`, `module._target_`, `data._target_`, the trainer budget
  (`max_steps` / `max_epochs`) and one key per field of the parameter dataclass, with the same
  default and a one-line comment;
- `tasks/<name>/config.py`: `Config`, a dataclass, the one source of truth of each parameter:
  its type (choice keys are `enum.StrEnum`s made with `choices()`, so a bad value is rejected with the allowed values
  wherever it was set) and its range checks (`__post_init__`, raising `ConfigError`). The
  runner builds it with `runner.task_params.build_params`, which checks keys, types and enum
  values; `Config(...)` called directly (tests) runs the range checks only;
- a data module (a `TensorDataModule`): `generating_config()`, `build()`, optionally
  `on_tensors()` to derive views, and its own `train_dataloader()` (and `test_dataloader()`
  when the task has a test set: the runner then calls `trainer.test`);
- a `LightningModule` built as `cls(params=Config)`, reading its data in `setup()` through
  `self.trainer.datamodule` (e.g. `.problem`, `.tensors`). It may offer, for the runner and
  the callbacks: `paper_metrics()` (the numbers the paper reports: measured values only, the
  resolved parameters are in `results.json["params"]` already), `spectral_matrices()` and
  `spectral_reference()` (MatrixSpectrum), `forward(x)` (FeatureSpectrum, NTKSpectrum),
  `loss_fn(outputs, targets)` (HessianSpectrum) and `spectral_probe_batch()` (a fixed probe
  batch instead of the first train batches);
- `tasks/<name>/analysis.py` with `summarize(results) -> DataFrame` for sweeps (built from the
  helpers in `tasks.base.aggregate`), optionally `notes(summary) -> markdown` and
  `plot(summary, results, out_dir) -> [png paths]` (`python -m runner.report` calls them);
- its tiny overrides in `tests/tasks/tiny.py` and its tests in `tests/tasks/test_<name>.py`.

Range checks use `runner.validation` (`check_range`, `check_positive`, `check_choice` for a
constrained combination; each raises `ConfigError` naming the key).
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # only for annotations: validating parameters must not load torch
    import torch

# keys of conf/task/<name>.yaml that are not parameters of the task
META_KEYS = ("name", "module", "data", "max_steps", "max_epochs")


@runtime_checkable
class TaskModule(Protocol):
    """What the runner and the callbacks may call on a task's LightningModule."""

    def training_step(self, batch: Any, batch_idx: int) -> Any: ...


@runtime_checkable
class ReportsPaperMetrics(Protocol):
    """A module whose final numbers go to results.json["paper_metrics"]."""

    def paper_metrics(self) -> dict[str, Any]: ...


@runtime_checkable
class ExposesMatrices(Protocol):
    """A module whose named matrices the MatrixSpectrum callback watches."""

    def spectral_matrices(self) -> dict[str, torch.Tensor]: ...


@dataclass(frozen=True)
class TaskParts:
    """The pieces of one task, resolved from its yaml: name, Config, data and module classes,
    and its analysis module (None without one)."""

    name: str
    config: type
    data: type
    module: type
    analysis: Any


def param_class(name: str) -> type:
    """Return the parameter dataclass `tasks.<name>.config.Config`."""
    cls = importlib.import_module(f"tasks.{name}.config").Config
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"tasks.{name}.config.Config is not a dataclass")
    return cls


def choices(name: str, values: str, module: str) -> type[enum.StrEnum]:
    """Return the StrEnum `name` of a choice key, defined in `module` (pass `__name__`), whose
    members are the space-separated `values`, each named as its value (OmegaConf looks members
    up by name, so `global` or `per_image` work as given)."""
    return enum.StrEnum(name, [(v, v) for v in values.split()], module=module)


def enum_type(field: dataclasses.Field) -> type[enum.Enum] | None:
    """Return the Enum a choice field takes (also inside `X | None`), else None."""
    options = typing.get_args(field.type) or (field.type,)
    for option in options:
        if isinstance(option, type) and issubclass(option, enum.Enum):
            return option
    return None


def field_defaults(cls: type) -> dict[str, Any]:
    """Return each field's declared default (before `__post_init__`), enums as their values."""
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default
        out[f.name] = value.value if isinstance(value, enum.Enum) else value
    return out


def resolved_params(params: Any) -> dict[str, Any]:
    """Return a parameter dataclass as plain JSON values (enums as their values): what
    results.json["params"] holds and what modules save as hyperparameters (a checkpoint then
    loads with torch's weights_only unpickler)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(params), enum_to_str=True)


def _import(target: str) -> type:
    module, _, attr = target.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def task_parts(yaml_path: str | Path) -> TaskParts:
    """Return the TaskParts that `conf/task/<name>.yaml` names (imports them)."""
    from omegaconf import OmegaConf

    node = OmegaConf.load(str(yaml_path))
    name = str(node.name)
    try:
        analysis = importlib.import_module(f"tasks.{name}.analysis")
    except ModuleNotFoundError:
        analysis = None
    return TaskParts(name=name, config=param_class(name),
                     data=_import(str(node.data._target_)),
                     module=_import(str(node.module._target_)), analysis=analysis)
