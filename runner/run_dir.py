"""Run-directory integrity: a run directory belongs to the config that made it.

The first valid start writes `.hydra/config.yaml` (the composed config, as Hydra would;
`hydra.output_subdir` is null so Hydra itself never rewrites it), `overrides.yaml` and
`hydra.yaml`. A rerun in the same directory compares its config with the recorded one: with
`resume=auto` a different config is refused, naming the differing keys; `resume=never` starts
over, clearing the previous run's outputs first. A config error stops before anything is
written, so a finished run's files are never touched by a failed rerun.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.validation import ConfigError

RECORD = Path(".hydra") / "config.yaml"
# keys that do not change what a run computes: where it writes, how it reports and resumes, what
# watches it (callbacks only observe: tests/tasks/test_contract.py checks the spectra leave the
# paper metrics bit-identical)
NOT_IDENTITY = ("hydra", "paths", "resume", "print_results", "progress_bar", "logger", "tags",
                "threads", "callbacks")
# what a run writes into its directory (cleared when resume=never starts over)
OUTPUTS = (".hydra", "results.json", ".paper_metrics.json", "metrics.csv", "checkpoints",
           "spectra", "plots", "wandb", "hparams.yaml", "attempts.json")


def identity(config: dict[str, Any]) -> dict[str, Any]:
    """Return the unresolved config without the keys in NOT_IDENTITY."""
    return {k: v for k, v in config.items() if k not in NOT_IDENTITY}


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Return {dotted key: leaf value} of a nested dict."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Return 'key: old -> new' for every leaf that differs between two configs (sorted)."""
    a, b = _flat(identity(old)), _flat(identity(new))
    missing = "(absent)"
    return [f"{k}: {a.get(k, missing)} -> {b.get(k, missing)}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def recorded_config(run_dir: Path) -> dict[str, Any] | None:
    """Return the config recorded in `run_dir` (None for a fresh directory)."""
    path = run_dir / RECORD
    return OmegaConf.to_container(OmegaConf.load(str(path))) if path.is_file() else None


def check_run_dir(run_dir: Path, cfg: DictConfig, resume: str) -> bool:
    """Raise ConfigError when `run_dir` holds a run of another config and resume=auto; return
    whether the directory holds a previous run to be cleared (resume=never over an old run)."""
    old = recorded_config(run_dir)
    if old is None:
        return False
    if resume == "never":
        return True
    new = OmegaConf.to_container(cfg, resolve=False)
    changed = config_differences(old, new)
    if changed:
        shown = "; ".join(changed[:8]) + (f"; and {len(changed) - 8} more" if len(changed) > 8
                                          else "")
        raise ConfigError(
            f"hydra.run.dir={run_dir} holds a run of another config ({shown}). Rerun with the "
            "same config to resume it, add resume=never to start over in this directory "
            "(its previous outputs are deleted), or choose another hydra.run.dir",
            key="hydra.run.dir")
    return False


def clear_outputs(run_dir: Path) -> None:
    """Delete what a previous run wrote into `run_dir` (see OUTPUTS)."""
    for name in OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def record_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> None:
    """Write `.hydra/config.yaml` (without the hydra node), `overrides.yaml` and `hydra.yaml`
    unless this directory already holds its record."""
    folder = run_dir / RECORD.parent
    if (run_dir / RECORD).is_file():
        return
    folder.mkdir(parents=True, exist_ok=True)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    OmegaConf.save(job, folder / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), folder / "overrides.yaml")
    hydra_node = cfg.get("hydra")
    if hydra_node is None and HydraConfig.initialized():  # a real run: Hydra keeps it aside
        hydra_node = HydraConfig.get()
    if hydra_node is not None:
        OmegaConf.save(OmegaConf.create({"hydra": hydra_node}), folder / "hydra.yaml")
