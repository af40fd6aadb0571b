"""A CSV logger that appends to an existing metrics.csv instead of deleting it.

Lightning's writer deletes metrics.csv when it starts, and assumes it is the file's only writer.
Here the file survives a resume, and the header is re-read before every save, so rows written
by another process of the same run (ddp_spawn workers, a resumed run) are kept and the columns
stay aligned.
"""

from __future__ import annotations

import csv
import os

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps and extends an existing metrics.csv."""

    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning's writer deletes it)."""

    def _header(self) -> list[str]:
        if not self._fs.isfile(self.metrics_file_path):
            return []
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            return next(csv.reader(handle), [])

    def save(self) -> None:
        """Append the pending rows; widen the header (rewriting the file) when keys are new."""
        if not self.metrics:
            return
        header = self._header()
        keys = sorted(set(header) | set(self.metrics_keys) | set().union(*self.metrics))
        if header and header != keys:
            self._rewrite_with_new_header(keys)
        self.metrics_keys = keys
        mode = "a" if header else "w"
        with self._fs.open(self.metrics_file_path, mode, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            if not header:
                writer.writeheader()
            writer.writerows(self.metrics)
        self.metrics = []


class CSVLogger(_LightningCSVLogger):
    """CSVLogger writing `<save_dir>/metrics.csv`; a resumed run appends its rows to it."""

    @property
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment


def count_rows(path: str | os.PathLike) -> int:
    """Return the number of data rows (header excluded) of a CSV file (0 when absent)."""
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as handle:
        return max(0, sum(1 for _ in csv.reader(handle)) - 1)


def keep_rows(path: str | os.PathLike, n: int) -> None:
    """Cut a CSV file back to its header and first `n` data rows (a no-op when it has no more)."""
    if count_rows(path) <= n:
        return
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="") as handle:
        csv.writer(handle).writerows(rows[:n + 1])
    os.replace(tmp, path)
