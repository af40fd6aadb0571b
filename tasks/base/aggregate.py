"""Aggregation helpers that every task's `summarize(results)` uses.

`results` is the list that `runner.report.load_results` reads: one `results.json` per job, each
with `status`, `seed`, `job_dir`, `params` (the resolved task parameters) and `paper_metrics`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


def runs_table(results: list[dict[str, Any]], params: Sequence[str] = (),
               metrics: Mapping[str, str] | Sequence[str] = (),
               require: str | None = None) -> pd.DataFrame:
    """Return one row per completed run: `seed`, `job_dir`, the named resolved parameters and
    the named paper metrics (a mapping renames: {column: metric}); a missing metric is NaN.
    With `require`, runs whose paper metrics lack that key are left out. A results.json written
    before `params` existed (its modules echoed the settings into paper_metrics) is read from
    there; a parameter found in neither is NaN."""
    names = dict(metrics) if isinstance(metrics, Mapping) else {m: m for m in metrics}
    rows = []
    for r in results:
        pm = r.get("paper_metrics") or {}
        if r.get("status") != "completed" or (require is not None and require not in pm):
            continue
        given = r.get("params") or {}
        row: dict[str, Any] = {"seed": int(r["seed"]), "job_dir": r.get("job_dir", "")}
        row.update({k: given[k] if k in given else pm.get(k, np.nan) for k in params})
        row.update({col: _scalar(pm.get(key)) for col, key in names.items()})
        rows.append(row)
    return pd.DataFrame(rows, columns=["seed", "job_dir", *params, *names])


def _scalar(value: Any) -> Any:
    """Return None as NaN, numbers as floats, anything else unchanged."""
    if value is None:
        return np.nan
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value


def mean_sd(frame: pd.DataFrame, by: Sequence[str], values: Sequence[str], *,
            seed: str = "seed", mean_suffix: str = "_mean") -> pd.DataFrame:
    """Return one row per group of `by`: n_seeds (distinct `seed`s), `<v><mean_suffix>` (the
    mean over the group's runs, NaN ignored) and `<v>_sd` (sample sd, ddof = 1; NaN for one
    run) for each value column `v`."""
    rows = []
    for key, g in frame.groupby(list(by), sort=True, dropna=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = int(g[seed].nunique())
        for v in values:
            col = g[v].astype(float)
            row[f"{v}{mean_suffix}"] = float(col.mean())
            row[f"{v}_sd"] = float(col.std(ddof=1)) if col.notna().sum() > 1 else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def paired_difference(frame: pd.DataFrame, match: Sequence[str], arm: str, baseline: Any,
                      value: str) -> pd.Series:
    """Return, for every row, value − value of the baseline arm (`frame[arm] == baseline`) on the
    row with equal `match` columns (the seed among them): a seed-paired difference; NaN where
    the baseline run is missing. Baseline rows get 0."""
    base = frame[frame[arm] == baseline].set_index(list(match))[value]
    if not base.index.is_unique:
        raise ValueError(f"several baseline runs ({arm}={baseline}) share one {list(match)}")
    keys = pd.MultiIndex.from_frame(frame[list(match)]) if len(match) > 1 else frame[match[0]]
    ref = base.reindex(keys).to_numpy(dtype=float)
    return pd.Series(frame[value].to_numpy(dtype=float) - ref, index=frame.index,
                     name=f"d_{value}")


def fit_power_law(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Return the exponent p of y ≈ C·x^p: the OLS slope of log y against log x. A decaying law
    L ∝ N^(−alpha) has alpha = −p (the one sign convention: this returns the slope); NaN when
    some y ≤ 0."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or np.unique(x).size < 2:
        raise ValueError("a power-law fit needs at least two distinct x values")
    if np.any(x <= 0):
        raise ValueError("a power-law fit needs positive x")
    if not np.all(y > 0):  # no power law through a zero or negative value (NaN included)
        return float("nan")
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])
