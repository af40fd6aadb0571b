"""Sweep aggregation for chefnmr: top-k, validity, max Tanimoto and AMR per size, mode and CFG
weight (mean ± sd over seeds), read from each run's flat paper-metric keys
`<metric>_<mode>_w<w>` (`<metric>_none` for the unconditional mode)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

KEY = re.compile(r"^(top\d+|max_tanimoto|validity|amr)_(both|h_only|c_only|none)(?:_w([\d.]+))?$")


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per (max_heavy_atoms, mode, w): n_runs and the mean and sd over seeds of
    every metric found (top1, top<k>, max_tanimoto, validity, amr), plus roundtrip_acc and
    duplicate_spectrum_rate of the data."""
    rows = []
    for r in results:
        if r.get("status") != "completed":
            continue
        pm, params = r.get("paper_metrics") or {}, r.get("params") or {}
        per: dict[tuple[str, float], dict[str, float]] = {}
        for key, value in pm.items():
            m = KEY.match(key)
            if m and isinstance(value, (int, float)):
                w = float(m.group(3)) if m.group(3) else 0.0
                per.setdefault((m.group(2), w), {})[m.group(1)] = float(value)
        for (mode, w), values in per.items():
            rows.append({"max_heavy_atoms": params.get("max_heavy_atoms", np.nan),
                         "mode": mode, "w": w, "seed": r.get("seed"),
                         "roundtrip_acc": pm.get("roundtrip_acc", np.nan),
                         "duplicate_spectrum_rate": pm.get("duplicate_spectrum_rate", np.nan),
                         **values})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["max_heavy_atoms", "mode", "w", "n_runs"])
    metrics = [c for c in frame.columns if c not in ("max_heavy_atoms", "mode", "w", "seed")]
    grouped = frame.groupby(["max_heavy_atoms", "mode", "w"], dropna=False)
    out = grouped.size().rename("n_runs").to_frame()
    for col in metrics:
        out[col] = grouped[col].mean()
        out[f"{col}_sd"] = grouped[col].std(ddof=1)
    return out.reset_index()
