"""Hydra callbacks: a summary line at the end of a sweep, non-zero exit if any job failed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class SweepSummary(Callback):
    """Print how many jobs of the sweep completed and failed; exit 1 if any failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        statuses: dict[str, list[str]] = {}
        for path in sorted(sweep_dir.rglob("results.json")):
            try:
                status = json.loads(path.read_text()).get("status", "unknown")
            except (OSError, json.JSONDecodeError):
                status = "unreadable"
            statuses.setdefault(status, []).append(str(path.parent.relative_to(sweep_dir)))
        counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(statuses.items())) or "no jobs"
        print(f"sweep {sweep_dir}: {counts}")
        print(f"aggregate with: python -m runner.report {sweep_dir}")
        failed = statuses.get("failed", [])
        if failed:  # SystemExit: Hydra turns other callback exceptions into warnings
            raise SystemExit(
                f"{len(failed)} job(s) failed: {', '.join(failed)} (see their results.json)"
            )
