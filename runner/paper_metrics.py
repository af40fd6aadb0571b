"""Collect the task's `paper_metrics()` where training ran (also in spawned DDP workers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from runner.io import atomic_write_json

FILE_NAME = ".paper_metrics.json"


class PaperMetricsCollector(pl.Callback):
    """On global rank 0, after training and after testing, write `module.paper_metrics()` to
    `<run dir>/.paper_metrics.json`, so that the runner reads them back in the main process even
    when training ran in other processes (ddp_spawn)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / FILE_NAME

    def _collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and hasattr(pl_module, "paper_metrics"):
            atomic_write_json(self.path, pl_module.paper_metrics())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collect(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._collect(trainer, pl_module)


def read_paper_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Return the metrics the collector wrote for this run ({} when none)."""
    path = Path(run_dir) / FILE_NAME
    return json.loads(path.read_text()) if path.exists() else {}
