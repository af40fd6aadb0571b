"""Where a config value was set: the command line, an experiment file, conf/local, or a default."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _override_key(override: str) -> str:
    """Return the dotted key of a Hydra override such as `+task.x=1` or `~task.y`."""
    return override.lstrip("+~").split("=", 1)[0]


def _file_sets(path: Path, key: str) -> bool:
    """Return whether the `# @package _global_` config file at `path` sets `key`."""
    if not path.is_file():
        return False
    node = OmegaConf.load(str(path))
    node.pop("defaults", None)
    return OmegaConf.select(node, key, default=None, throw_on_missing=False) is not None


def _config_file(relative: str) -> Path | None:
    """Return the file that Hydra composed for `relative` (e.g. experiment/x.yaml): the first
    file config source of this run (conf/, then hydra.searchpath entries) that has it."""
    hc = HydraConfig.get()
    sources = [Path(s.path) for s in hc.runtime.config_sources if s.schema == "file"]
    for root in sources or [CONF_DIR]:
        if (root / relative).is_file():
            return root / relative
    return None


def _shown(path: Path) -> str:
    """Return `path` relative to the project root when it lies inside it."""
    try:
        return str(path.relative_to(CONF_DIR.parent))
    except ValueError:
        return str(path)


def where_set(key: str) -> str:
    """Return a phrase saying where `key` got its value in this run: the override that set it,
    the experiment file, conf/local/default.yaml, or the group's yaml (its default)."""
    if not HydraConfig.initialized():
        return "set in the config"
    hc = HydraConfig.get()
    # the key itself, or a key inside it (callbacks.x.y=1); hydra.* overrides are kept apart
    for override in [*hc.overrides.task, *hc.overrides.hydra]:
        if _override_key(override) == key or _override_key(override).startswith(key + "."):
            return f"set by the override {override}"
    choices = hc.runtime.choices
    # the `# @package _global_` files, the last composed first (the last one that sets it wins)
    globals_ = ["local/default.yaml"] + [
        f"{group}/{choices[group]}.yaml" for group in reversed(list(choices))
        if choices[group] and (group.startswith("experiment") or group in ("debug", "launcher"))]
    for relative in globals_:
        path = _config_file(relative)
        if path is not None and _file_sets(path, key):
            return f"set in {_shown(path)}"
    group = key.split(".", 1)[0]
    if group in choices and choices[group]:
        return f"the default in conf/{group}/{choices[group]}.yaml"
    if group == "hydra":
        return "the default in conf/hydra/default.yaml"
    return "the default in conf/config.yaml"
