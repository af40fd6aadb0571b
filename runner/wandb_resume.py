"""One W&B run per run directory, also when it was resumed offline.

Online, W&B resumes a run by its id on the server. Offline, every attempt writes a new folder
(`wandb/offline-run-<time>-<id>/`) whose step counter starts again at 0, and a killed attempt's
file holds only what W&B's service had written when it died (often nothing). So when an
offline run resumes from a checkpoint, the scalar rows logged up to that checkpoint are logged
again into the new attempt's run from `metrics.csv` (the durable record: every logger gets the
same rows, and the CSV is cut back to the checkpoint first), and the earlier attempts' folders
are deleted: the newest folder always holds the complete scalar history, and `wandb sync`
uploads one run. Histograms from before the checkpoint are not carried over (the spectra
themselves are in `spectra/<probe>.npz`).
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any


def previous_folders(run: Any) -> list[Path]:
    """Return the folders of earlier offline attempts with `run`'s id, oldest first."""
    current = Path(run.dir).parent  # <save_dir>/wandb/offline-run-<time>-<id>/files
    return sorted(p for p in current.parent.glob(f"offline-run-*-{run.id}")
                  if p.resolve() != current.resolve())


def csv_rows(path: str | Path) -> list[dict[str, Any]]:
    """Return the rows of a metrics.csv as W&B log rows: the non-empty cells as floats, the
    `step` column as `trainer/global_step` (how Lightning's W&B logger names it)."""
    if not Path(path).is_file():
        return []
    rows = []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            out = {k: float(v) for k, v in row.items() if v not in ("", None) and k != "step"}
            if row.get("step") not in ("", None):
                out["trainer/global_step"] = int(float(row["step"]))
            rows.append(out)
    return rows


def replay_offline_history(run: Any, metrics_csv: str | Path) -> int:
    """Log every row of `metrics_csv` into `run` unless it already holds rows, delete the earlier
    attempts' folders; return the number of rows logged."""
    folders = previous_folders(run)
    if not folders or int(run.step) > 0:
        return 0
    rows = csv_rows(metrics_csv)
    for row in rows:
        run.log(row)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return len(rows)
