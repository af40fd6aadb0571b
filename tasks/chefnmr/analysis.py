"""Sweep aggregation for chefnmr: top-k, validity, max Tanimoto and AMR per size, mode and CFG
weight (mean ± sd over seeds), read from each run's flat paper-metric keys
`<metric>_<mode>_w<w>` (`<metric>_none` for the unconditional mode)."""

from __future__ import annotations

import re
from pathlib import Path
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


def example_pairs(samples_csv: Path, mode: str, w: float, n: int) -> list[tuple[str, str, str]]:
    """Return up to `n` (target SMILES, shown prediction, legend) triples from a run's
    samples.csv for one (mode, w): the prediction is the first exact match among the target's
    samples, else its first valid sample, else '' (no valid sample)."""
    frame = pd.read_csv(samples_csv, keep_default_na=False)
    frame = frame[(frame["mode"] == mode) & np.isclose(frame["w"].astype(float), w)]
    out = []
    for row, group in list(frame.groupby("row", sort=False))[:n]:
        target = str(group["target"].iloc[0])
        valid = [s for s in group["smiles"].astype(str) if s]
        hits = [s for s in valid if s == target]
        shown = hits[0] if hits else (valid[0] if valid else "")
        verdict = "match" if hits else ("valid, wrong" if valid else "no valid sample")
        out.append((target, shown, f"row {row}: {verdict} ({len(valid)}/{len(group)} valid)"))
    return out


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path,
         n_examples: int = 6) -> list[Path]:
    """Draw, per completed job, a grid of target (left) vs predicted (right) molecules for the
    first `n_examples` targets of mode `both` at the job's last CFG weight (RDKit's drawing, SVG);
    return the written paths."""
    from rdkit import Chem
    from rdkit.Chem import Draw

    paths = []
    for r in results:
        csv_path = Path(r.get("job_dir", "")) / "samples" / "samples.csv"
        params = r.get("params") or {}
        weights = params.get("cfg_weights") or [0.0]
        if r.get("status") != "completed" or not csv_path.is_file():
            continue
        pairs = example_pairs(csv_path, "both", float(weights[-1]), n_examples)
        if not pairs:
            continue
        mols, legends = [], []
        for target, shown, legend in pairs:
            mols += [Chem.MolFromSmiles(target), Chem.MolFromSmiles(shown) if shown else None]
            legends += [f"target {target}", legend]
        svg = Draw.MolsToGridImage(mols, molsPerRow=2, subImgSize=(260, 200), legends=legends,
                                   useSVG=True)
        name = f"molecules_{Path(r['job_dir']).name}_h{params.get('max_heavy_atoms', '')}.svg"
        path = Path(out_dir) / name
        path.write_text(svg)
        paths.append(path)
    return paths


def _value(group: pd.DataFrame, mode: str, w: float | None, name: str) -> float:
    """Return column `name` of the row with this mode (and CFG weight, unless None), else NaN."""
    sel = group[group["mode"] == mode]
    if w is not None:
        sel = sel[np.isclose(sel["w"].astype(float), w)]
    return float(sel[name].iloc[0]) if len(sel) and name in sel else float("nan")


def claims(summary: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """Return one row per (max_heavy_atoms, claim) with the compared values and the verdict,
    from `summarize()`'s table (top-k in [0, 1]); conditioned modes at the largest CFG weight w*:
    1 spectra help: top-k(both, w*) ≥ top-k(none) + 0.10 and max Tanimoto(both, w*) > (none);
    2 both ≥ h_only and both ≥ c_only in top-k at w*;
    3 CFG: top-k(both, w*) > top-k(both, 0), w* > 0.
    A claim whose values are missing (mode or weight not evaluated) is 'not measured'."""
    col = f"top{k}"
    rows = []
    for size, group in summary.groupby("max_heavy_atoms", dropna=False):
        conditioned = group[group["mode"] != "none"]
        w_top = float(conditioned["w"].max()) if len(conditioned) else float("nan")
        both, none = _value(group, "both", w_top, col), _value(group, "none", None, col)
        tan_both = _value(group, "both", w_top, "max_tanimoto")
        tan_none = _value(group, "none", None, "max_tanimoto")
        h_only, c_only = _value(group, "h_only", w_top, col), _value(group, "c_only", w_top, col)
        both0 = _value(group, "both", 0.0, col)
        found = [
            ("1 spectra help", (both, none, tan_both, tan_none),
             f"both {both:.3f} vs none {none:.3f} (+0.10 needed); max Tanimoto {tan_both:.3f} "
             f"vs {tan_none:.3f}", both >= none + 0.10 and tan_both > tan_none),
            ("2 H+C >= H-only, C-only", (both, h_only, c_only),
             f"both {both:.3f}, h_only {h_only:.3f}, c_only {c_only:.3f}",
             both >= h_only and both >= c_only),
            ("3 CFG w > 0 beats w = 0", (both, both0, w_top),
             f"both at w={w_top:g}: {both:.3f} vs w=0: {both0:.3f}", w_top > 0 and both > both0),
        ]
        for claim, needed, values, holds in found:
            verdict = ("not measured" if any(np.isnan(v) for v in needed)
                       else "holds" if holds else "does not hold")
            rows.append({"max_heavy_atoms": size, "claim": claim, f"top{k} values": values,
                         "verdict": verdict})
    return pd.DataFrame(rows)


def notes(summary: pd.DataFrame) -> str:
    """Return the claims table (`claims()`) as markdown, k read from the summary's top-k column."""
    from runner.report import markdown_table

    ks = [int(c[3:]) for c in summary.columns if re.fullmatch(r"top\d+", c) and c != "top1"]
    if not ks or summary.empty:
        return "No top-k columns: claims not evaluated.\n"
    return "### Claims\n\n" + markdown_table(claims(summary, max(ks)))
