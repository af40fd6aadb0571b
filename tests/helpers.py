"""Test-only Lightning callbacks: interrupt a run at a given step."""

from __future__ import annotations

import os
import signal

import pytorch_lightning as pl


class CrashAtStep(pl.Callback):
    """Crash once `trainer.global_step` reaches `step` (before that step's checkpoint).

    `hard_kill=True` sends SIGKILL to the process (no clean-up runs: like the OOM killer or a
    pre-emption); otherwise a RuntimeError is raised.
    """

    def __init__(self, step: int, hard_kill: bool = False) -> None:
        self.step, self.hard_kill = step, hard_kill

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            if self.hard_kill:  # like the OOM killer or a cluster pre-emption: no clean-up
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"simulated crash at step {trainer.global_step}")


class InterruptAtStep(pl.Callback):
    """Raise KeyboardInterrupt (as Ctrl-C would) once `trainer.global_step` reaches `step`."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step >= self.step:
            raise KeyboardInterrupt
