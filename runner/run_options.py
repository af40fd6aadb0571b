"""The top-level keys of conf/config.yaml: their schema, checked like a task's parameters."""

from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig

from runner.config_sources import where_set
from runner.task_params import validate_node
from runner.validation import ConfigError, check_range
from tasks.base.contract import choices

Resume = choices("Resume", "auto never", __name__)
# the config groups and nodes beside the options below
GROUPS = ("task", "trainer", "logger", "callbacks", "paths", "hydra")


@dataclass
class RunOptions:
    """conf/config.yaml's own keys (their comments are there)."""

    seed: int = 0
    resume: Resume = Resume.auto
    threads: int = 1
    progress_bar: Any = "auto"
    run_test: bool = True
    print_results: bool = True
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_range("threads", self.threads, 1, None)
        if self.progress_bar not in ("auto", True, False):
            raise ConfigError(f"progress_bar={self.progress_bar!r} is not allowed; choose one "
                              "of: auto, true, false", key="progress_bar")


def check_run_options(cfg: DictConfig) -> RunOptions:
    """Return the validated top-level options of `cfg`; an unknown top-level key (`+sed=3`) or
    a bad value raises ConfigError naming the key, where it was set and what is allowed."""
    raw = {k: v for k, v in cfg.items() if k not in GROUPS}
    for name in (f.name for f in fields(RunOptions)):
        if name not in raw:  # `~seed` removed it: the runner reads every one of them
            where = where_set(name).replace("set by the override ~", "removed by the override ~")
            raise ConfigError(f"{name} is missing ({where}); it is required (allowed: a value, "
                              "e.g. its default in conf/config.yaml)", key=name)
    return validate_node(raw, RunOptions, "", "a top-level key (the config groups: "
                         + ", ".join(GROUPS[:-1]) + ")")
