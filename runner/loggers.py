"""Build the run's loggers: the CSV logger always, W&B (offline by default) with a resumable id."""

from __future__ import annotations

import secrets
import string
import sys
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

WANDB_ID_FILE = "wandb_run_id"


def wandb_run_id(checkpoint_dir: Path) -> str:
    """Return the W&B run id kept beside the checkpoints, creating and saving one if absent."""
    path = checkpoint_dir / WANDB_ID_FILE
    if path.exists():
        return path.read_text().strip()
    alphabet = string.ascii_lowercase + string.digits
    run_id = "".join(secrets.choice(alphabet) for _ in range(8))
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id


def build_loggers(
    logger_cfg: DictConfig | None, run_dir: Path, group: str | None, run_name: str
) -> list[Any]:
    """Instantiate every logger in `logger_cfg`; a CSV logger is added if none is configured.

    The W&B logger gets the run id saved in `<run_dir>/checkpoints/wandb_run_id` (so a resumed
    run continues the same W&B run), `resume="allow"`, and the sweep's group.
    """
    nodes = OmegaConf.to_container(logger_cfg, resolve=True) if logger_cfg else {}
    loggers: list[Any] = []
    has_csv = False
    for key, node in (nodes or {}).items():
        if not node or "_target_" not in node:
            continue
        target = str(node["_target_"])
        if target.endswith("WandbLogger"):
            node.setdefault("name", None)
            node["id"] = wandb_run_id(run_dir / "checkpoints")
            node["resume"] = "allow"
            node["group"] = node.get("group") or group
            node["name"] = node.get("name") or run_name
            Path(node.get("save_dir") or run_dir).mkdir(parents=True, exist_ok=True)
        has_csv = has_csv or target.endswith("CSVLogger")
        logger = instantiate(node, _convert_="all")
        if target.endswith("WandbLogger") and getattr(logger, "_wandb_init", {}).get(
                "anonymous", "x") is None:
            # Lightning always passes anonymous=None, which W&B 0.31 answers with a warning on
            # every run ("The anonymous setting has no effect")
            del logger._wandb_init["anonymous"]
        loggers.append(logger)
        del key
    if not has_csv:
        from runner.csv_logger import CSVLogger

        loggers.insert(0, CSVLogger(save_dir=str(run_dir), name="", version=""))
    return loggers


def finish_wandb() -> None:
    """Close the active W&B run, if any, so the next job in this process starts a new one. A
    process that never imported wandb has no run to close and is not made to import it (0.6 s
    at the end of every run without W&B)."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is not None:
        wandb.finish()
