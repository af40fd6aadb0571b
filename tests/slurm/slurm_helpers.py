"""Callbacks for the SLURM tests: slow a run down (so that it can be pre-empted or time out
mid-training) without touching anything the run computes."""

from __future__ import annotations

import time

import pytorch_lightning as pl


class SleepPerStep(pl.Callback):
    """Sleep `seconds` after every train batch (no random draw, no state: metrics unchanged)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(self.seconds)
