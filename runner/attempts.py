"""The attempts of one run: every start of the run in its directory, with its wall time.

`<run dir>/attempts.json` lists one entry per start: {started (UTC, ISO 8601), resumed_from
(the checkpoint, or null), status, wall_time_s, global_step}. The runner opens an entry when a
run starts and closes it with the final status; `AttemptClock` (a callback) refreshes the open
entry's wall time and step at every checkpoint, so an attempt that was killed without clean-up
keeps its time up to its last checkpoint and is marked `killed` by the next start. The run's
`wall_time_s` in results.json is the sum over its attempts.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from runner.io import atomic_write_json

FILE_NAME = "attempts.json"


def read_attempts(run_dir: str | Path) -> list[dict[str, Any]]:
    """Return the attempts recorded in `run_dir` ([] when none)."""
    path = Path(run_dir) / FILE_NAME
    return json.loads(path.read_text()) if path.exists() else []


def open_attempt(run_dir: str | Path, started: float, resumed_from: str | None
                 ) -> list[dict[str, Any]]:
    """Mark attempts left `running` as `killed`, append this one, write the file; return all."""
    attempts = read_attempts(run_dir)
    for entry in attempts:
        if entry["status"] == "running":
            entry["status"] = "killed"
    attempts.append({"started": datetime.fromtimestamp(started, UTC).isoformat(),
                     "resumed_from": resumed_from, "status": "running", "wall_time_s": 0.0,
                     "global_step": None})
    atomic_write_json(Path(run_dir) / FILE_NAME, attempts)
    return attempts


def update_attempt(run_dir: str | Path, started: float, **fields: Any) -> list[dict[str, Any]]:
    """Set the last attempt's wall time (now − started) and `fields`, write; return all."""
    attempts = read_attempts(run_dir)
    if not attempts:
        return attempts
    attempts[-1].update(wall_time_s=time.time() - started, **fields)
    atomic_write_json(Path(run_dir) / FILE_NAME, attempts)
    return attempts


def total_wall_time(attempts: list[dict[str, Any]]) -> float:
    """Return the summed wall time of all attempts (seconds)."""
    return float(sum(entry["wall_time_s"] for entry in attempts))


class AttemptClock(pl.Callback):
    """Refresh the open attempt's wall time and global step whenever a checkpoint is written."""

    def __init__(self, run_dir: str | Path, started: float) -> None:
        self.run_dir, self.started = Path(run_dir), started

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict) -> None:
        if trainer.is_global_zero:
            update_attempt(self.run_dir, self.started, global_step=int(trainer.global_step))
