"""One sink for every spectral callback: scalars to the loggers, arrays to an npz, W&B histograms,
and a PNG per probe at the end.

Arrays go to `<run dir>/spectra/<probe>.npz`: for each array name, `<name>` holds the spectra of
every logged step stacked (K, n) (NaN-padded when lengths differ) and `<name>__steps` the K step
indices. The file is rewritten atomically at each record; a resumed run loads it and appends
(entries at or after the resumed step are replaced, so nothing is duplicated).
"""

from __future__ import annotations

import fnmatch
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

STEPS_SUFFIX = "__steps"


def _to_numpy(value: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):
            value = value.float()
        value = value.numpy()
    return np.asarray(value).reshape(-1)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    """Return rows stacked (K, max len), NaN-padded; complex if any row is complex."""
    width = max(len(r) for r in rows)
    dtype = np.complex128 if any(np.iscomplexobj(r) for r in rows) else np.float64
    out = np.full((len(rows), width), np.nan, dtype=dtype)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


class SpectrumSink:
    """Collects the spectra of one probe across steps and writes them out (see module doc)."""

    def __init__(self, run_dir: str | Path, probe: str) -> None:
        self.run_dir, self.probe = Path(run_dir), probe
        self.path = self.run_dir / "spectra" / f"{probe}.npz"
        self.history: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        self.references: dict[str, dict[str, Any]] = {}
        self.last: tuple[int, dict[str, float]] | None = None  # (step, scalars) of the last record
        self._resume_checked = False
        if self.path.exists():
            with np.load(self.path) as data:
                for key in data.files:
                    if key.endswith(STEPS_SUFFIX):
                        continue
                    steps = [int(s) for s in data[key + STEPS_SUFFIX]]
                    rows = [row[~_is_pad(row)] for row in data[key]]
                    self.history[key] = (steps, rows)

    # ------------------------------------------------------------------ recording
    def record(self, step: int, arrays: dict[str, Any], scalars: dict[str, float],
               loggers: list[Any], histograms: bool = True) -> None:
        """Store `arrays` for `step`, rewrite the npz, and log `scalars` (+ histograms)."""
        if not self._resume_checked:  # drop what a resumed run is about to recompute
            for steps, rows in self.history.values():
                keep = [i for i, s in enumerate(steps) if s < step]
                steps[:], rows[:] = [steps[i] for i in keep], [rows[i] for i in keep]
            self._resume_checked = True
        for name, value in arrays.items():
            steps, rows = self.history.setdefault(name, ([], []))
            if steps and steps[-1] == step:
                rows[-1] = _to_numpy(value)
            else:
                steps.append(step)
                rows.append(_to_numpy(value))
        self.save()
        finite = {k: float(v) for k, v in scalars.items() if v is not None and np.isfinite(v)}
        self.last = (step, finite)
        prefixed = {f"spectra/{self.probe}/{k}": v for k, v in finite.items()}
        for lg in loggers:
            lg.log_metrics(prefixed, step=step)
            if histograms and type(lg).__name__ == "WandbLogger":
                self._histograms(lg, step, arrays)

    def _histograms(self, wandb_logger: Any, step: int, arrays: dict[str, Any]) -> None:
        import wandb

        hists = {}
        for name, value in arrays.items():
            arr = _to_numpy(value)
            arr = np.abs(arr) if np.iscomplexobj(arr) else arr
            arr = arr[np.isfinite(arr)]
            if arr.size:
                hists[f"spectra/{self.probe}/{name}/histogram"] = wandb.Histogram(arr)
        if hists:
            wandb_logger.log_metrics(hists, step=step)

    def save(self) -> None:
        """Write every array and its steps to the npz atomically."""
        payload = {}
        for name, (steps, rows) in self.history.items():
            if rows:
                payload[name] = _stack(rows)
                payload[name + STEPS_SUFFIX] = np.asarray(steps, dtype=np.int64)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.probe}.", suffix=".npz")
        os.close(fd)
        try:
            np.savez(tmp, **payload)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_summary(self, headline: tuple[str, ...], plot: Path | None, cost_s: float,
                      off: str | None = None) -> None:
        """Write `spectra/<probe>.summary.json`: the last recorded step, the scalars of that
        snapshot whose names match a `headline` pattern (fnmatch), the number of snapshots, the
        plot's path (relative to the run directory), `cost_s`, the probe's wall time in the
        run (snapshots, writing, plotting or waiting for the plot), and `off`: why the probe
        turned itself off (None while it ran)."""
        step, scalars = self.last if self.last is not None else (None, {})
        picked = {k: v for k, v in scalars.items()
                  if any(fnmatch.fnmatchcase(k, p) for p in headline)}
        snapshots = max((len(steps) for steps, _ in self.history.values()), default=0)
        summary = {"probe": self.probe, "step": step, "snapshots": snapshots,
                   "headline": picked, "cost_s": cost_s, "off": off,
                   "plot": str(plot.relative_to(self.run_dir)) if plot is not None else None}
        path = self.run_dir / "spectra" / f"{self.probe}.summary.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, path)

    def plot_in_background(self) -> tuple[Any, Path] | None:
        """Start drawing the plot in a forked process and return (process, png path), or None
        when nothing was recorded; where fork is not the platform's way (not Linux) draw it now
        and return (None, path). The child has this sink's history and references by copy."""
        if not any(rows for _, rows in self.history.values()):
            return None
        out = self.run_dir / "plots" / f"{self.probe}.png"
        if sys.platform != "linux":
            self.plot()
            return None, out
        import multiprocessing

        process = multiprocessing.get_context("fork").Process(
            target=self.plot, name=f"plot-{self.probe}", daemon=False)
        process.start()
        return process, out

    def plot(self, max_panels: int = 12) -> Path | None:
        """Draw `<run dir>/plots/<probe>.png` and return its path (None when nothing recorded)."""
        from callbacks.plots import plot_probe

        if not any(rows for _, rows in self.history.values()):
            return None
        out = self.run_dir / "plots" / f"{self.probe}.png"
        plot_probe(self.history, out, title=f"{self.probe} spectra", references=self.references,
                   max_panels=max_panels)
        return out


def read_summaries(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Return {probe: summary} from every `spectra/<probe>.summary.json` of a run ({} if none)."""
    out = {}
    for path in sorted((Path(run_dir) / "spectra").glob("*.summary.json")):
        data = json.loads(path.read_text())
        out[data["probe"]] = data
    return out


def _is_pad(row: np.ndarray) -> np.ndarray:
    return np.isnan(row.real) if np.iscomplexobj(row) else np.isnan(row)
