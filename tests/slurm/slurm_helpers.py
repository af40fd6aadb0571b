"""Callbacks for the SLURM tests: slow a run down (so that it can be pre-empted or time out
mid-training) without touching anything the run computes."""

from __future__ import annotations

import time

import pytorch_lightning as pl

from runner.attempts import read_attempts


class SleepPerStep(pl.Callback):
    """Sleep `seconds` after every train batch (no random draw, no state: metrics unchanged).

    `attempts`: sleep only in the run's first `attempts` attempts (counted in its attempts.json,
    which holds the current one when training starts); later attempts run at full speed.
    """

    def __init__(self, seconds: float, attempts: int | None = None) -> None:
        self.seconds = float(seconds)
        self.attempts = None if attempts is None else int(attempts)
        self._sleep = self.seconds

    def on_train_start(self, trainer, pl_module) -> None:
        if self.attempts is not None:
            attempt = len(read_attempts(trainer.default_root_dir))
            self._sleep = self.seconds if attempt <= self.attempts else 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._sleep:
            time.sleep(self._sleep)
