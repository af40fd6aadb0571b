"""The keys of the trainer, logger and callbacks groups, checked like task parameters.

Each checked node is merged into a schema dataclass by `runner.task_params.validate_node` (the
one validation mechanism: unknown keys, types, then the ranges of `__post_init__`), so a bad
value stops the run before any work with one message naming the key, where it was set and what
is allowed. Nothing here imports torch, Lightning or W&B: the schemas list what
`pytorch_lightning.Trainer`, Lightning's `CSVLogger` / `WandbLogger` and `wandb.init` accept
(tests/runner/test_bad_keys.py checks them against those signatures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.config_files import config_roots, options_defining
from runner.config_sources import where_set
from runner.task_params import validate_node
from runner.validation import ConfigError, check_choice, check_range

# Trainer arguments the runner passes itself (a config that sets them is refused)
RUNNER_SET = ("logger", "callbacks", "default_root_dir", "enable_checkpointing",
              "enable_progress_bar")
PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16", "64", "32", "16", "bf16")
PROFILERS = ("simple", "advanced", "pytorch", "xla")
WANDB_MODES = ("offline", "online", "disabled", "shared", "dryrun", "run")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _at_least(key: str, value: Any, low: int, meaning: str = "") -> None:
    """Raise ConfigError unless `value` is None or an integer >= low (`meaning`: of low)."""
    if value is not None and value < low:
        extra = f"{low} ({meaning}) or an integer >= {low + 1}" if meaning else f">= {low}"
        raise ConfigError(f"{key}={value!r} is out of range; allowed: {extra}"
                          + (" or null" if meaning else ""), key=key)


def _batches(key: str, value: Any) -> None:
    """Lightning's limit_*_batches / overfit_batches: a fraction (float in [0, 1]) or a count."""
    if value is None:
        return
    if (_is_int(value) and value < 0) or (isinstance(value, float) and not (
            0.0 <= value <= 1.0 or value.is_integer())):
        raise ConfigError(f"{key}={value!r} is out of range; allowed: a fraction in [0.0, 1.0], "
                          "a number of batches >= 0, or null", key=key)


@dataclass
class TrainerOptions:
    """The arguments of `pytorch_lightning.Trainer` that conf/trainer/*.yaml may set (their
    comments are there; Lightning's documentation has the rest)."""

    accelerator: str = "auto"
    strategy: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    precision: Any = None
    fast_dev_run: bool | int = False
    max_epochs: int | None = None
    min_epochs: int | None = None
    max_steps: int = -1
    min_steps: int | None = None
    max_time: Any = None
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    limit_test_batches: int | float | None = None
    limit_predict_batches: int | float | None = None
    overfit_batches: int | float = 0.0
    val_check_interval: Any = None
    check_val_every_n_epoch: int | None = 1
    num_sanity_val_steps: int | None = None
    log_every_n_steps: int | None = None
    enable_model_summary: bool | None = None
    accumulate_grad_batches: int = 1
    gradient_clip_val: int | float | None = None
    gradient_clip_algorithm: str | None = None
    deterministic: Any = None
    benchmark: bool | None = None
    inference_mode: bool = True
    use_distributed_sampler: bool = True
    profiler: str | None = None
    detect_anomaly: bool = False
    barebones: bool = False
    plugins: Any = None
    sync_batchnorm: bool = False
    reload_dataloaders_every_n_epochs: int = 0
    enable_autolog_hparams: bool = True
    model_registry: str | None = None

    def __post_init__(self) -> None:
        check_choice("trainer.accelerator", self.accelerator, ["cpu", "gpu", "cuda", "mps", "auto"])
        if _is_int(self.devices) and self.devices != -1 and self.devices < 1:
            raise ConfigError(f"trainer.devices={self.devices} is out of range; allowed: a number "
                              ">= 1, -1 (all), auto, or a list of device indices",
                              key="trainer.devices")
        check_range("trainer.num_nodes", self.num_nodes, 1, None)
        if self.precision is not None and str(self.precision) not in PRECISIONS:
            raise ConfigError(f"trainer.precision={self.precision!r} is not allowed; choose one "
                              f"of: {', '.join(PRECISIONS)}", key="trainer.precision")
        if _is_int(self.fast_dev_run):
            check_range("trainer.fast_dev_run", self.fast_dev_run, 0, None)
        _at_least("trainer.max_epochs", self.max_epochs, -1, "no limit")
        if self.max_steps < -1:
            raise ConfigError(f"trainer.max_steps={self.max_steps} is out of range; allowed: -1 "
                              "(no limit) or an integer >= 0", key="trainer.max_steps")
        _at_least("trainer.min_epochs", self.min_epochs, 0)
        _at_least("trainer.min_steps", self.min_steps, 0)
        for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches",
                     "limit_predict_batches", "overfit_batches"):
            _batches(f"trainer.{name}", getattr(self, name))
        _at_least("trainer.check_val_every_n_epoch", self.check_val_every_n_epoch, 1)
        _at_least("trainer.num_sanity_val_steps", self.num_sanity_val_steps, -1, "all")
        _at_least("trainer.log_every_n_steps", self.log_every_n_steps, 0)
        check_range("trainer.accumulate_grad_batches", self.accumulate_grad_batches, 1, None)
        if self.gradient_clip_val is not None:
            check_range("trainer.gradient_clip_val", self.gradient_clip_val, 0, None)
        check_choice("trainer.gradient_clip_algorithm", self.gradient_clip_algorithm,
                     [None, "norm", "value"])
        check_choice("trainer.deterministic", self.deterministic, [True, False, "warn", None])
        if self.profiler is not None:
            check_choice("trainer.profiler", self.profiler, PROFILERS)
        check_range("trainer.reload_dataloaders_every_n_epochs",
                    self.reload_dataloaders_every_n_epochs, 0, None)


@dataclass
class CSVOptions:
    """Lightning's CSVLogger arguments (runner.csv_logger.CSVLogger takes the same)."""

    save_dir: str = "."
    name: str | None = "lightning_logs"
    version: Any = None
    prefix: str = ""
    flush_logs_every_n_steps: int = 100

    def __post_init__(self) -> None:
        check_range("logger.csv.flush_logs_every_n_steps", self.flush_logs_every_n_steps, 1, None)


@dataclass
class WandbOptions:
    """Lightning's WandbLogger arguments and the `wandb.init` ones it passes on."""

    name: str | None = None
    save_dir: str = "."
    version: str | None = None
    offline: bool = False
    dir: str | None = None
    id: str | None = None
    anonymous: bool | None = None
    project: str | None = None
    log_model: Any = False
    prefix: str = ""
    checkpoint_name: str | None = None
    add_file_policy: str = "mutable"
    entity: str | None = None
    notes: str | None = None
    tags: list[str] | None = None
    config: Any = None
    config_exclude_keys: list[str] | None = None
    config_include_keys: list[str] | None = None
    allow_val_change: bool | None = None
    group: str | None = None
    job_type: str | None = None
    mode: str | None = None
    force: bool | None = None
    reinit: Any = None
    resume: Any = None
    resume_from: str | None = None
    fork_from: str | None = None
    save_code: bool | None = None
    tensorboard: bool | None = None
    sync_tensorboard: bool | None = None
    monitor_gym: bool | None = None
    settings: Any = None

    def __post_init__(self) -> None:
        if self.mode is not None:
            check_choice("logger.wandb.mode", self.mode, WANDB_MODES)
        check_choice("logger.wandb.log_model", self.log_model, [False, True, "all"])
        check_choice("logger.wandb.add_file_policy", self.add_file_policy,
                     ["mutable", "immutable"])


LOGGER_SCHEMAS = {"CSVLogger": CSVOptions, "WandbLogger": WandbOptions}


def _node(raw: DictConfig) -> dict[str, Any]:
    return {k: v for k, v in raw.items() if k != "_target_"}


def check_trainer_options(trainer_cfg: DictConfig) -> TrainerOptions:
    """Return the validated trainer node (its `_target_` aside)."""
    raw = _node(trainer_cfg)
    for key in RUNNER_SET:
        if key in raw:
            raise ConfigError(f"trainer.{key} ({where_set(f'trainer.{key}')}) is set by the runner "
                              f"itself; a config may set every other Trainer argument",
                              key=f"trainer.{key}")
    return validate_node(raw, TrainerOptions, "trainer.", "an argument of the Lightning Trainer")


def check_group_nodes(nodes: DictConfig | None, group: str) -> None:
    """Raise ConfigError for a node of `group` (callbacks, logger) without a `_target_`: a key
    added to a callback or logger that the chosen option does not have (it would do nothing),
    naming the options that have it (`+callbacks.hessian_spectrum.k=3` without
    callbacks=spectra)."""
    nodes = nodes or {}
    roots = config_roots(HydraConfig.get() if HydraConfig.initialized() else None)
    for name, node in nodes.items():
        if not isinstance(node, DictConfig) or "_target_" in node:
            continue
        key = f"{group}.{name}"
        chosen = [k for k, v in nodes.items() if isinstance(v, DictConfig) and "_target_" in v]
        has_it = options_defining(group, str(name), roots)
        hint = (f"; it is in {' and '.join(f'{group}={o}' for o in has_it)}: add "
                f"{group}={has_it[0]} to the command" if has_it else "")
        raise ConfigError(f"{key} ({where_set(key)}) is not a {group.rstrip('s')} of this run (it "
                          f"has no _target_, so it would do nothing){hint}; the {group} of this "
                          f"run: {', '.join(chosen) or 'none'}", key=key)


def check_loggers(logger_cfg: DictConfig | None) -> None:
    """Validate each logger node whose `_target_` has a schema (CSV, W&B)."""
    for name, node in (logger_cfg or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        schema = LOGGER_SCHEMAS.get(str(node._target_).rsplit(".", 1)[-1])
        if schema is not None:
            validate_node(_node(node), schema, f"logger.{name}.",
                          f"an argument of {node._target_}")
