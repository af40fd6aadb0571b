"""The resume checkpoint: `<run dir>/checkpoints/last.ckpt`, the state *before* a train batch.

Lightning's ModelCheckpoint saves at the end of a batch, before that batch's metrics reach the
loggers and before epoch-end hooks run, so a run resumed from it either loses or repeats rows,
and whatever draws random numbers between the save and the next batch (a new epoch's shuffle)
cannot be replayed. `ResumeCheckpoint` saves at the *start* of every N-th train batch instead:
everything the previous batches logged is on disk (the loggers are flushed first and the CSV
row count goes into the checkpoint, with the epoch's running means: runner/epoch_sums.py),
the random states (runner/random_states.py) are exactly
those the batch is about to use, and the loop restarts at that batch. A final checkpoint is
written when training ends (a finished run resumes to "nothing left to train"). Files are
written to a temporary name and renamed into place: a kill while saving leaves the previous
`last.ckpt` intact.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Checkpoint

from runner.csv_logger import count_rows, keep_rows
from runner.epoch_sums import epoch_sums, seed_epoch_sums

LAST = "last.ckpt"


class ResumeCheckpoint(Checkpoint):
    """Write `<dirpath>/last.ckpt` at the start of every `every_n_train_steps`-th train batch
    (global step a multiple of N) and when training ends; on resume, cut `metrics.csv` back to
    the rows it held at that checkpoint (the resumed run logs the rest again)."""

    def __init__(self, dirpath: str, every_n_train_steps: int = 10) -> None:
        if int(every_n_train_steps) < 1:
            raise ValueError(f"every_n_train_steps={every_n_train_steps} must be >= 1")
        self.dirpath, self.every_n = Path(dirpath), int(every_n_train_steps)
        self._saved_step: int | None = None  # global step of the last save (or of the restore)
        self._csv_rows = 0                    # rows of metrics.csv at that save
        self._logger_step: int | None = None  # Lightning's logging step to put back on resume
        self._epoch_sums: dict[str, Any] | None = None  # the epoch's running metrics, likewise
        self._trainer: pl.Trainer | None = None

    @property
    def last_path(self) -> Path:
        """Return the path of the resume checkpoint."""
        return self.dirpath / LAST

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        logger_step = (None if trainer is None
                       else int(trainer.fit_loop.epoch_loop._batches_that_stepped))
        return {"global_step": self._saved_step, "csv_rows": self._csv_rows,
                "logger_step": logger_step,
                "epoch_sums": {} if trainer is None else epoch_sums(trainer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._saved_step = state.get("global_step")
        self._csv_rows = int(state.get("csv_rows", 0))
        self._logger_step = state.get("logger_step")
        self._epoch_sums = state.get("epoch_sums")
        trainer = self._trainer
        if trainer is not None and trainer.is_global_zero:
            keep_rows(_csv_path(trainer), self._csv_rows)
            for run in _offline_wandb_runs(trainer):
                from runner.wandb_resume import replay_offline_history

                replay_offline_history(run, _csv_path(trainer))

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._logger_step is not None:
            # Lightning adds one to its logging step when it restarts, assuming a checkpoint
            # from the end of a batch; this one is from the start of the batch
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._logger_step
            self._logger_step = None
        if self._epoch_sums:
            seed_epoch_sums(trainer, self._epoch_sums)
        self._epoch_sums = None
        step = int(trainer.global_step)
        if step > 0 and step % self.every_n == 0 and step != self._saved_step:
            self.save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if int(trainer.global_step) != self._saved_step or not self.last_path.exists():
            self.save(trainer)

    def save(self, trainer: pl.Trainer) -> None:
        """Flush the loggers, count metrics.csv's rows, write last.ckpt (all ranks take part;
        rank 0 renames the file into place)."""
        for lg in trainer.loggers:
            lg.save()
        self._saved_step = int(trainer.global_step)
        self._csv_rows = count_rows(_csv_path(trainer)) if trainer.is_global_zero else 0
        tmp = self.dirpath / f".{LAST}.tmp"
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        trainer.strategy.barrier("ResumeCheckpoint.mkdir")
        trainer.save_checkpoint(tmp)
        if trainer.is_global_zero:
            os.replace(tmp, self.last_path)
        trainer.strategy.barrier("ResumeCheckpoint.save")


def _csv_path(trainer: pl.Trainer) -> Path:
    """Return `<run dir>/metrics.csv` (where the runner's CSV logger writes)."""
    return Path(trainer.default_root_dir) / "metrics.csv"


def _offline_wandb_runs(trainer: pl.Trainer | None) -> list[Any]:
    """Return the W&B runs of the trainer's W&B loggers that write offline."""
    runs = []
    for lg in [] if trainer is None else trainer.loggers:
        if type(lg).__name__ == "WandbLogger" and trainer.is_global_zero:
            run = lg.experiment
            if getattr(getattr(run, "settings", None), "mode", None) == "offline" or getattr(
                    getattr(run, "settings", None), "_offline", False):
                runs.append(run)
    return runs

