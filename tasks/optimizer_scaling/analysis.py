"""Sweep aggregation for optimizer_scaling: fit L(N) ∝ N^-alpha per (optimizer, s, T, m).

Besides the reported alpha (Adam's and matrix_sign's lr chosen on the validation loss over the
full grid) the summary fits the same runs under the other choices a run's per-lr losses allow:
the lr chosen on the test loss (`alpha_oracle`) and the previous procedure, the narrow grids
chosen on the test loss (`alpha_narrow_test`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate

# The spec's reconstruction (one seed) for m = 1 and m = 8, and the paper's abstract (s = 1).
RECONSTRUCTION = {
    1: {"gd": {0.5: 0.149, 0.75: 0.160, 1.0: 0.134, 1.25: 0.100, 1.5: 0.068, 2.0: 0.051},
        "natural_gradient": {0.5: 0.147, 0.75: 0.214, 1.0: 0.317, 1.25: 0.451, 1.5: 0.602,
                             2.0: 0.609}},
    8: {"gd": {0.5: 0.152, 0.75: 0.181, 1.0: 0.171},
        "diag": {0.5: 0.152, 0.75: 0.184, 1.0: 0.183},
        "adam": {0.5: 0.153, 0.75: 0.227, 1.0: 0.301},
        "natural_gradient": {0.5: 0.152, 0.75: 0.233, 1.0: 0.352}},
}
PAPER = {"gd": {1.0: 0.12}, "natural_gradient": {1.0: 0.31}}
OPTIMIZER_ORDER = ["gd", "diag", "adam", "matrix_sign", "natural_gradient"]
# The grids before issue 14 (Adam's is the spec's): their top lr was chosen in most runs.
NARROW_GRIDS = {"adam": (3e-3, 1e-2, 3e-2, 0.1), "matrix_sign": (0.01, 0.03, 0.1, 0.3, 1.0)}
GRID_KEYS = {"adam": "lr_grid", "matrix_sign": "sign_lr_grid"}
KEYS = ["optimizer", "s", "steps", "n_outputs"]
# claim 2's links (lower, upper): alpha_upper − alpha_lower ≥ −TIE at every s ≥ 1
ORDER_LINKS = [("gd", "diag"), ("diag", "adam"), ("diag", "matrix_sign"),
               ("adam", "natural_gradient"), ("matrix_sign", "natural_gradient")]
TIE = 0.02
# an empty summary (no (optimizer, s) with two widths to fit) still has the table's key columns
SUMMARY_COLUMNS = [*KEYS, "alpha", "alpha_sd", "n_seeds"]
VARIANTS = {"alpha": "test_loss", "alpha_oracle": "test_loss_oracle",
            "alpha_narrow_test": "test_loss_narrow_test"}


def pick(val: list[float], test: list[float], grid: list[float] | None,
         allowed: tuple[float, ...] | None = None, on: str = "val") -> tuple[float, bool]:
    """Return (test loss, at_edge) of the copy with the lowest `on` ("val" | "test") loss among
    the copies whose lr is in `allowed` (all when None); at_edge: its lr is the smallest or the
    largest of those copies' lrs (False for single-copy rules)."""
    idx = np.arange(len(test))
    if grid is not None and allowed is not None:
        idx = np.array([i for i, lr in enumerate(grid) if np.isclose(allowed, lr).any()], int)
        if idx.size == 0:  # a custom grid without any of the allowed lrs
            return float("nan"), False
    score = np.asarray(val if on == "val" else test, dtype=float)[idx]
    best = int(idx[int(np.argmin(score))])
    at_edge = len(idx) > 1 and best in (int(idx[0]), int(idx[-1]))
    return float(test[best]), bool(at_edge)


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: seed, the keys, n_features, test_loss (the lr chosen on
    the validation loss), test_loss_oracle (chosen on the test loss), test_loss_narrow_test
    (the narrow grid, chosen on the test loss), lr_at_edge and narrow_at_edge."""
    runs = aggregate.runs_table(
        results, params=["optimizer", "s", "n_features", "steps", "n_outputs", *GRID_KEYS.values()],
        metrics=["test_loss", "test_loss_oracle", "val_loss_per_lr", "test_loss_per_lr"],
        require="test_loss")
    runs["n_outputs"] = runs["n_outputs"].fillna(1).astype(int)  # results before the key: m = 1
    narrow, edge, narrow_edge = [], [], []
    for r in runs.itertuples(index=False):
        grid = getattr(r, GRID_KEYS[r.optimizer]) if r.optimizer in GRID_KEYS else None
        if not isinstance(r.test_loss_per_lr, list):  # results before the per-lr losses
            narrow.append(np.nan), edge.append(False), narrow_edge.append(False)
            continue
        per_lr = (r.val_loss_per_lr, r.test_loss_per_lr, grid)
        loss, at_edge = pick(*per_lr, NARROW_GRIDS.get(r.optimizer), on="test")
        narrow.append(loss), narrow_edge.append(at_edge)
        edge.append(pick(*per_lr)[1])
    runs["test_loss_narrow_test"] = narrow
    runs["lr_at_edge"], runs["narrow_at_edge"] = edge, narrow_edge
    runs["test_loss_oracle"] = runs["test_loss_oracle"].fillna(runs["test_loss"])
    return runs.drop(columns=[*GRID_KEYS.values(), "val_loss_per_lr", "test_loss_per_lr"])


def fit_alphas(runs: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (keys, seed) with two or more widths: alpha = −(OLS slope of log L
    against log N) for each column of VARIANTS, and n_widths."""
    rows = []
    for key, g in runs.groupby([*KEYS, "seed"]):
        if g["n_features"].nunique() < 2:
            continue
        g = g.sort_values("n_features")
        row = dict(zip([*KEYS, "seed"], key))
        for name, column in VARIANTS.items():
            row[name] = (-aggregate.fit_power_law(g["n_features"], g[column])
                         if g[column].notna().all() else np.nan)
        row["n_widths"] = len(g)
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return alpha (mean, sd over seeds) per (optimizer, s, steps, n_outputs), the other lr
    choices' alpha, the share of runs whose chosen lr is at an end of its grid (full and narrow
    grid), and the spec's and paper's values."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    per_seed = fit_alphas(runs)
    if per_seed.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    table = aggregate.mean_sd(per_seed, KEYS, ["alpha"], mean_suffix="")
    table["alpha_sd"] = table["alpha_sd"].fillna(0.0)
    grouped = per_seed.groupby(KEYS)
    table["n_widths"] = grouped["n_widths"].max().to_numpy()
    for name in ("alpha_oracle", "alpha_narrow_test"):
        table[name] = grouped[name].mean().to_numpy()
    edges = runs.groupby(KEYS)[["lr_at_edge", "narrow_at_edge"]].mean()
    table = table.join(edges.rename(columns={"lr_at_edge": "edge_frac",
                                             "narrow_at_edge": "narrow_edge_frac"}), on=KEYS)
    table["alpha_reconstruction"] = [RECONSTRUCTION.get(m, {}).get(o, {}).get(s) for o, s, m in
                                     zip(table["optimizer"], table["s"], table["n_outputs"])]
    table["alpha_paper"] = [PAPER.get(o, {}).get(s) for o, s in zip(table["optimizer"],
                                                                     table["s"])]
    order = {o: i for i, o in enumerate(OPTIMIZER_ORDER)}
    table = table.sort_values(["steps", "n_outputs", "s", "optimizer"], key=lambda c: c.map(order)
                              if c.name == "optimizer" else c)
    return table.reset_index(drop=True)


def delta_alpha(summary: pd.DataFrame) -> pd.DataFrame:
    """Return Δalpha = alpha_NG − alpha_GD and their ratio per (steps, n_outputs, s)."""
    if summary.empty:
        return pd.DataFrame()
    pivot = summary.pivot_table(index=["steps", "n_outputs", "s"], columns="optimizer",
                                values="alpha")
    if "gd" not in pivot or "natural_gradient" not in pivot:
        return pd.DataFrame()
    out = pd.DataFrame({"alpha_gd": pivot["gd"], "alpha_ng": pivot["natural_gradient"]})
    out["delta_alpha"] = out["alpha_ng"] - out["alpha_gd"]
    out["ratio"] = out["alpha_ng"] / out["alpha_gd"]
    return out.reset_index()


def ordering(summary: pd.DataFrame) -> pd.DataFrame:
    """Return claim 2 per (steps, n_outputs, s): alpha_upper − alpha_lower for each link of
    ORDER_LINKS (columns "upper-lower") and `holds` (every link ≥ −TIE); links with a missing
    optimizer are left out."""
    if summary.empty:
        return pd.DataFrame()
    pivot = summary.pivot_table(index=["steps", "n_outputs", "s"], columns="optimizer",
                                values="alpha")
    links = [(lo, up) for lo, up in ORDER_LINKS if lo in pivot and up in pivot]
    if not links:
        return pd.DataFrame()
    out = pd.DataFrame({f"{up}-{lo}": pivot[up] - pivot[lo] for lo, up in links})
    out["holds"] = (out >= -TIE).all(axis=1)
    return out.reset_index()


def notes(summary: pd.DataFrame) -> str:
    """Return markdown with the Δalpha table (paper: Δ peaks near s = 1.5; ratio 2.6 at s = 1)
    and claim 2's ordering links."""
    delta = delta_alpha(summary)
    if delta.empty:
        return ""
    from runner.report import markdown_table

    text = ("## Δalpha = alpha_NG − alpha_GD (paper: ratio 2.6 at s = 1, Δ peaks near s = 1.5)\n\n"
            + markdown_table(delta))
    order = ordering(summary)
    if not order.empty:
        text += (f"\n## Claim 2: GD ≤ diag ≤ {{adam, matrix_sign}} ≤ NG (differences of alpha; "
                 f"holds: all ≥ −{TIE})\n\n" + markdown_table(order))
    return text


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw alpha(s) per optimizer (with the spec's values) and L(N) curves; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_a, ax_l) = plt.subplots(1, 2, figsize=(11, 4.2))
    several = summary[["steps", "n_outputs"]].drop_duplicates().shape[0] > 1
    for (opt, steps, m), g in summary.groupby(["optimizer", "steps", "n_outputs"]):
        label = f"{opt} T={steps} m={m}" if several else opt
        ax_a.errorbar(g["s"], g["alpha"], yerr=g["alpha_sd"], marker="o", capsize=3, label=label)
        ref = RECONSTRUCTION.get(m, {}).get(opt, {})
        if ref:
            ax_a.plot(list(ref), list(ref.values()), ls=":", color="gray")
    ax_a.scatter([1.0, 1.0], [0.12, 0.31], marker="*", s=120, color="k", zorder=5,
                 label="paper (s=1)")
    ax_a.set_xlabel("s (latent spectrum Λ = k^-s)")
    ax_a.set_ylabel("alpha in L(N) ∝ N^-alpha")
    ax_a.legend(fontsize=7)
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
