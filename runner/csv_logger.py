"""A CSV logger that appends to an existing metrics.csv (resume) instead of deleting it."""

from __future__ import annotations

import csv
import os

from pytorch_lightning.loggers import CSVLogger as _LightningCSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv is kept and its header reused."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                header = next(csv.reader(handle), [])
            self.metrics_keys = sorted(header)


class CSVLogger(_LightningCSVLogger):
    """CSVLogger writing `<save_dir>/metrics.csv`; a resumed run appends its rows to it."""

    @property
    def experiment(self) -> AppendingExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
