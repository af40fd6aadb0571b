"""Sweep aggregation for optimizer_scaling: fit L(N) ∝ N^-alpha per (optimizer, s)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tasks.base import aggregate

# The spec's reconstruction (one seed, m = 1) and the paper's abstract (s = 1 only).
RECONSTRUCTION = {
    "gd": {0.5: 0.149, 0.75: 0.160, 1.0: 0.134, 1.25: 0.100, 1.5: 0.068, 2.0: 0.051},
    "natural_gradient": {0.5: 0.147, 0.75: 0.214, 1.0: 0.317, 1.25: 0.451, 1.5: 0.602,
                         2.0: 0.609},
}
PAPER = {"gd": {1.0: 0.12}, "natural_gradient": {1.0: 0.31}}
OPTIMIZER_ORDER = ["gd", "diag", "adam", "matrix_sign", "natural_gradient"]
# an empty summary (no (optimizer, s) with two widths to fit) still has the table's key columns
SUMMARY_COLUMNS = ["optimizer", "s", "steps", "alpha", "alpha_sd", "n_seeds"]


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: seed, optimizer, s, n_features, steps, test_loss."""
    return aggregate.runs_table(results, params=["optimizer", "s", "n_features", "steps"],
                                metrics=["test_loss"], require="test_loss")


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return alpha (mean, sd over seeds) per (optimizer, s, steps), beside the spec's values."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    per_seed = []
    for (opt, s, steps, seed), g in runs.groupby(["optimizer", "s", "steps", "seed"]):
        if g["n_features"].nunique() < 2:
            continue
        g = g.sort_values("n_features")
        per_seed.append({"optimizer": opt, "s": s, "steps": steps, "seed": seed,
                         "alpha": -aggregate.fit_power_law(g["n_features"], g["test_loss"]),
                         "n_widths": len(g)})
    per_seed = pd.DataFrame(per_seed)
    if per_seed.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = aggregate.mean_sd(per_seed, ["optimizer", "s", "steps"], ["alpha"], mean_suffix="")
    table["alpha_sd"] = table["alpha_sd"].fillna(0.0)
    table["n_widths"] = per_seed.groupby(["optimizer", "s", "steps"])["n_widths"].max().to_numpy()
    table["alpha_reconstruction"] = [RECONSTRUCTION.get(o, {}).get(s) for o, s in
                                     zip(table["optimizer"], table["s"])]
    table["alpha_paper"] = [PAPER.get(o, {}).get(s) for o, s in zip(table["optimizer"],
                                                                     table["s"])]
    order = {o: i for i, o in enumerate(OPTIMIZER_ORDER)}
    table = table.sort_values(["steps", "s", "optimizer"], key=lambda c: c.map(order)
                              if c.name == "optimizer" else c)
    return table.reset_index(drop=True)


def delta_alpha(summary: pd.DataFrame) -> pd.DataFrame:
    """Return Δalpha = alpha_NG − alpha_GD and their ratio per (s, steps)."""
    if summary.empty:
        return pd.DataFrame()
    pivot = summary.pivot_table(index=["steps", "s"], columns="optimizer", values="alpha")
    if "gd" not in pivot or "natural_gradient" not in pivot:
        return pd.DataFrame()
    out = pd.DataFrame({"alpha_gd": pivot["gd"], "alpha_ng": pivot["natural_gradient"]})
    out["delta_alpha"] = out["alpha_ng"] - out["alpha_gd"]
    out["ratio"] = out["alpha_ng"] / out["alpha_gd"]
    return out.reset_index()


def notes(summary: pd.DataFrame) -> str:
    """Return markdown with the Δalpha table (paper: Δ peaks near s = 1.5; ratio 2.6 at s = 1)."""
    delta = delta_alpha(summary)
    if delta.empty:
        return ""
    from runner.report import markdown_table

    return ("## Δalpha = alpha_NG − alpha_GD (paper: ratio 2.6 at s = 1, Δ peaks near s = 1.5)\n\n"
            + markdown_table(delta))


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw alpha(s) per optimizer (with the spec's values) and L(N) curves; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    for opt, g in summary.groupby("optimizer"):
        ax_a.errorbar(g["s"], g["alpha"], yerr=g["alpha_sd"], marker="o", capsize=3, label=opt)
        ref = {s: v for s, v in RECONSTRUCTION.get(opt, {}).items()}
        if ref:
            ax_a.plot(list(ref), list(ref.values()), ls=":", color="gray")
    ax_a.scatter([1.0, 1.0], [0.12, 0.31], marker="*", s=120, color="k", zorder=5,
                 label="paper (s=1)")
    ax_a.set_xlabel("s (latent spectrum Λ = k^-s)")
    ax_a.set_ylabel("alpha in L(N) ∝ N^-alpha")
    ax_a.legend(fontsize=8)
    runs = runs_table(results)
    if not runs.empty:
        s_mid = sorted(runs["s"].unique())[len(runs["s"].unique()) // 2]
        sub = runs[runs["s"] == s_mid].groupby(["optimizer", "n_features"])["test_loss"].mean()
        for opt in sub.index.get_level_values(0).unique():
            curve = sub[opt]
            ax_l.loglog(curve.index, curve.values, marker="o", label=opt)
        ax_l.set_title(f"test loss vs N at s = {s_mid:g}")
        ax_l.set_xlabel("N (features)")
        ax_l.set_ylabel("population test loss")
        ax_l.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "alpha_vs_s.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]
