"""Sweep aggregation for ei_network: predicted vs observed regime, spectral errors, phase plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate
from tasks.ei_network.config import MAX_CLIPPED_SHARE

REGIME_ORDER = ["stable", "global_sync", "global_osc", "bump", "wave", "chaos", "diverged"]
PARAM_KEYS = ["gbar_ee", "gbar_ie", "gbar_ei", "gbar_ii", "range_ee", "range_ie", "range_ei",
              "range_ii", "g_het", "density"]
COLORS = {"stable": "#ffffff", "global_sync": "#3b6fd6", "global_osc": "#2ca02c",
          "bump": "#f2d13c", "wave": "#e377c2", "chaos": "#7f7f7f", "diverged": "#000000"}
# summary column <- paper metric
METRICS = {"predicted": "predicted_regime", "observed": "observed_regime",
           "R_theory": "bulk_radius_theory", "R_empirical": "bulk_radius_empirical",
           "R_rel_error": "bulk_radius_rel_error", "outlier_max_dist": "outlier_max_distance",
           "top_outlier_dist": "top_outlier_distance", "top_outlier_theory": "top_outlier_theory",
           "top_outlier_empirical": "top_outlier_empirical", "f_pred": "predicted_frequency",
           "f_obs": "dominant_frequency", "n_pred": "predicted_wavenumber",
           "n_obs": "dominant_wavenumber", "clipped_share": "clipped_share"}
COLUMNS = ["preset", "seed", "dim", "n_exc", *PARAM_KEYS, "predicted", "observed", "match",
           *list(METRICS)[2:]]


def _cplx(v: Any) -> complex | None:
    """Return [re, im] as a complex number (None and NaN give None)."""
    return None if not isinstance(v, (list, tuple)) else complex(v[0], v[1])


def row_label(preset: Any, predicted: Any) -> str:
    """Return a row's label: the preset's name when the theory, at the run's own parameters and
    size, predicts the preset's regime (each preset is named by the regime the paper gives it);
    else '<preset> params (theory: <predicted>)', so that no row reads as a reproduction of a
    regime it does not predict; 'none' for a run without preset."""
    if not isinstance(preset, str) or not preset:
        return "none"
    return preset if predicted == preset else f"{preset} params (theory: {predicted})"


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: its label (`row_label`), parameters, predicted/observed
    regime, spectral errors, predicted/observed frequency (1/τ) and wavenumber, and the share
    of expected connections removed by clipping p at 1 (max over blocks)."""
    frame = aggregate.runs_table(results, params=["preset", "dim", "n_exc", *PARAM_KEYS],
                                 metrics=METRICS)
    if frame.empty:
        return pd.DataFrame()
    frame["preset"] = [row_label(p, r) for p, r in zip(frame["preset"], frame["predicted"])]
    frame["match"] = frame["predicted"] == frame["observed"]
    top_th = [_cplx(v) for v in frame["top_outlier_theory"]]
    top_emp = [_cplx(v) for v in frame["top_outlier_empirical"]]
    # λ* distance: the metric, else |λ*_emp − λ*_theory| when both are known
    fallback = [np.nan if e is None or t is None else abs(e - t) for t, e in zip(top_th, top_emp)]
    frame["top_outlier_dist"] = frame["top_outlier_dist"].fillna(
        pd.Series(fallback, index=frame.index, dtype=float))
    frame["top_outlier_theory"] = [None if v is None else f"{v:.3f}" for v in top_th]
    frame["top_outlier_empirical"] = [None if v is None else f"{v:.3f}" for v in top_emp]
    frame = frame[COLUMNS].copy()
    frame["_order"] = frame["predicted"].map({k: i for i, k in enumerate(REGIME_ORDER)})
    frame = frame.sort_values(["_order", *[k for k in PARAM_KEYS if k in frame], "seed"])
    frame = frame.drop(columns="_order").reset_index(drop=True)
    varying = [k for k in PARAM_KEYS if frame[k].nunique() > 1]
    constant = [k for k in PARAM_KEYS if k not in varying and k in frame]
    return frame.drop(columns=constant if varying else [])


def confusion(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the predicted × observed count table (rows predicted)."""
    labels = [r for r in REGIME_ORDER if r in set(summary["predicted"]) | set(summary["observed"])]
    table = pd.crosstab(pd.Categorical(summary["predicted"], labels),
                        pd.Categorical(summary["observed"], labels), dropna=False)
    table.index.name, table.columns.name = "predicted", "observed"
    return table


def notes(summary: pd.DataFrame) -> str:
    """Return markdown: agreement rate, the confusion table and the frequency/wavenumber checks."""
    if summary.empty:
        return ""
    from runner.report import markdown_table

    rate = float(summary["match"].mean())
    conf = confusion(summary).reset_index()
    lines = [f"## Agreement: {int(summary['match'].sum())}/{len(summary)} = {rate:.1%} "
             "(spec: all six presets; >= 80% on the coarse grid)\n",
             "### Confusion (rows: theory, columns: simulation)\n", markdown_table(conf)]
    relabelled = summary[summary["preset"].str.contains(" params ", regex=False)]
    if not relabelled.empty:
        lines.append(f"{len(relabelled)} runs use a preset's parameters but the theory at their "
                     "size predicts another regime (labelled '<preset> params (theory: …)'): "
                     + ", ".join(sorted(set(relabelled["preset"]))) + "\n")
    clipped = summary["clipped_share"].dropna() if "clipped_share" in summary else []
    if len(clipped) and clipped.max() > 0:
        lines.append(f"Clipping p at 1 removed up to {clipped.max():.3g} of a block's expected "
                     f"connections ({int((clipped > 0).sum())}/{len(summary)} runs; refused "
                     f"above {MAX_CLIPPED_SHARE:g})\n")
    osc = summary[summary["predicted"].isin(["global_osc", "wave"])]
    if not osc.empty:
        err = (osc["f_obs"] - osc["f_pred"]).abs() / osc["f_pred"]
        lines.append(f"Frequency (global_osc, wave): |f_obs − f_pred|/f_pred mean {err.mean():.3f},"
                     f" max {err.max():.3f} over {len(osc)} runs\n")
    pat = summary[summary["predicted"].isin(["bump", "wave"])]
    if not pat.empty:
        same = (pat["n_obs"] - pat["n_pred"]).abs() < 1e-6
        lines.append(f"Wavenumber (bump, wave): |n_obs| = |n*| in {int(same.sum())}/{len(pat)} "
                     "runs\n")
    spec = summary.dropna(subset=["R_rel_error"]) if "R_rel_error" in summary else summary[:0]
    if not spec.empty:
        lines.append(f"Spectrum: bulk radius rel. error max {spec['R_rel_error'].max():.3f}; "
                     f"outlier match distance max {spec['outlier_max_dist'].max():.3f} (all "
                     f"outliers), {spec['top_outlier_dist'].max():.3f} (λ*)\n")
    return "\n".join(lines)


def _theory_map(results: list[dict[str, Any]], keys: list[str],
                grids: list[np.ndarray]) -> np.ndarray:
    """Return the theory regime index on the grid of the two varying parameters (float; NaN
    where the config is refused, e.g. by the clipping rule)."""
    from dataclasses import fields

    from runner.validation import ConfigError
    from tasks.ei_network.config import Config
    from tasks.ei_network.theory import theory_from_config

    names = {f.name for f in fields(Config)}
    params = next(r["params"] for r in results if r.get("status") == "completed")
    base = {k: v for k, v in params.items() if k in names}
    out = np.full((len(grids[1]), len(grids[0])), np.nan)
    for i, y in enumerate(grids[1]):
        for j, x in enumerate(grids[0]):
            try:
                cfg = Config(**{**base, "preset": None, keys[0]: float(x), keys[1]: float(y)})
            except ConfigError:
                continue
            out[i, j] = REGIME_ORDER.index(theory_from_config(cfg).regime)
    return out


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw the confusion matrix and, for a two-parameter sweep, the phase diagram (theory
    regions and boundaries at 61×61, simulated labels as markers); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    paths = []
    conf = confusion(summary)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    ax.imshow(conf.to_numpy(), cmap="Blues")
    ax.set_xticks(range(conf.shape[1]), conf.columns, rotation=45, ha="right")
    ax.set_yticks(range(conf.shape[0]), conf.index)
    for (i, j), v in np.ndenumerate(conf.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xlabel("observed (simulation)")
    ax.set_ylabel("predicted (spectrum)")
    ax.set_title(f"agreement {summary['match'].mean():.0%}")
    fig.tight_layout()
    paths.append(out_dir / "confusion.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    varying = [k for k in PARAM_KEYS if k in summary and summary[k].nunique() > 1]
    if len(varying) == 2:
        kx, ky = varying[1], varying[0]
        xs, ys = np.sort(summary[kx].unique()), np.sort(summary[ky].unique())
        fx = np.linspace(xs.min(), xs.max(), 61)
        fy = np.linspace(ys.min(), ys.max(), 61)
        regimes = _theory_map(results, [kx, ky], [fx, fy])
        cmap = ListedColormap([COLORS[r] for r in REGIME_ORDER])
        fig, ax = plt.subplots(figsize=(6.2, 5))
        ax.imshow(regimes, origin="lower", cmap=cmap, vmin=0, vmax=len(REGIME_ORDER) - 1,
                  extent=(fx[0], fx[-1], fy[0], fy[-1]), aspect="auto", alpha=0.45)
        ax.contour(fx, fy, regimes, levels=np.arange(len(REGIME_ORDER)) + 0.5, colors="k",
                   linewidths=0.8)
        for regime, grp in summary.groupby("observed"):
            ax.scatter(grp[kx], grp[ky], c=COLORS.get(regime, "k"), edgecolors="k", s=70,
                       marker="o", label=f"sim: {regime}")
        wrong = summary[~summary["match"]]
        ax.scatter(wrong[kx], wrong[ky], marker="x", c="r", s=120, label="disagrees")
        ax.set_xlabel(kx)
        ax.set_ylabel(ky)
        ax.set_title("theory regions (shaded, lines; blank: refused config) vs simulated "
                     "labels (dots)", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        fig.tight_layout()
        paths.append(out_dir / "phase_diagram.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
