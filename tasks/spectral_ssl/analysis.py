"""Sweep aggregation for spectral_ssl: probe accuracies per (method, ρ, β) over seeds, the gain
over β = 0 paired by seed, the claim checks, and the effective-rank curves over training.

Every number is a mean ± sd over seeds. gain = metric(β) − metric(β = 0) of the same seed and
the same other settings, then averaged. Claim 3 picks the best β > 0 per (method, ρ) by its mean
WGA gain (on the same test numbers it then reports: the spec's protocol, an optimistic one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate

POINT_KEYS = ["ssl_method", "reg_form", "reg_layer", "spurious_kind", "n_attr", "spurious_rho",
              "reg_beta"]
BASE_KEYS = [k for k in POINT_KEYS if k != "reg_beta"]
METRICS = {"wga": "worst_group_acc", "avg": "avg_acc", "mga": "mean_group_acc",
           "wga_erm": "worst_group_acc_erm", "avg_erm": "avg_acc_erm",
           "erank": "effective_rank", "top_share": "top_eig_share",
           "spur_align": "spurious_alignment", "pc_acc_a": "pc_probe_acc_a",
           "pc_acc_y": "pc_probe_acc_y", "top_share_peak": "top_eig_share_peak"}
GAIN_METRICS = ("wga", "avg", "wga_erm", "erank")
CLAIM3_GAIN = 0.10      # WGA(best β) − WGA(0) >= +10 points
CURVE = "spectrum/backbone/effective_rank"
SHARE_CURVE = "spectrum/backbone/top_eig_share"


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run with probe results: seed, job_dir, its settings
    (results.json["params"]) and the probe numbers (short names, METRICS) with the chance levels."""
    return aggregate.runs_table(results, params=POINT_KEYS,
                                metrics={**METRICS, "chance_a": "chance_a", "chance_y": "chance_y"},
                                require="worst_group_acc")


def add_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Return `runs` with gain_<m> = m − m(β = 0, same seed and settings) (NaN without a base)."""
    match = [*BASE_KEYS, "seed"]
    return runs.assign(**{f"gain_{m}": aggregate.paired_difference(runs, match, "reg_beta", 0, m)
                          for m in GAIN_METRICS})


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per (method, form, layer, kind, n_attr, ρ, β): n_seeds, mean and sd over
    seeds of WGA, average accuracy, ERM-probe WGA / accuracy, effective rank, top-eigenvalue
    share, spurious alignment, PC-probe accuracies, and the seed-paired gains over β = 0."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=[*POINT_KEYS, "n_seeds", "wga_mean", "wga_sd"])
    runs = add_gains(runs)
    table = aggregate.mean_sd(runs, POINT_KEYS, [*METRICS, *(f"gain_{m}" for m in GAIN_METRICS)])
    pc = runs["pc_acc_a"]
    counts = runs[POINT_KEYS].assign(  # per point: runs where claim 1 holds, seeds with erank up
        claim1_runs=(pc > runs["pc_acc_y"]) & (pc > runs["chance_a"]),
        erank_up_runs=runs["gain_erank"] > 0).groupby(POINT_KEYS, sort=True).sum()
    for i, col in enumerate(counts):  # after n_seeds, in mean_sd's (the same) group order
        table.insert(len(POINT_KEYS) + 1 + i, col, counts[col].to_numpy(int))
    return table


def best_beta(summary: pd.DataFrame) -> pd.DataFrame:
    """Return, per (method, form, layer, kind, n_attr, ρ), the β > 0 row with the largest mean
    WGA gain (claim 3), with `claim3` = gain ≥ +0.10 and average-accuracy gain ≥ 0."""
    reg = summary[(summary["reg_beta"] > 0) & summary["gain_wga_mean"].notna()]
    if reg.empty:
        return reg.assign(claim3=pd.Series(dtype=bool))
    idx = reg.groupby(BASE_KEYS, sort=True)["gain_wga_mean"].idxmax()
    best = reg.loc[idx].copy()
    best["claim3"] = (best["gain_wga_mean"] >= CLAIM3_GAIN) & (best["gain_avg_mean"] >= 0)
    return best.reset_index(drop=True)


def claim4(summary: pd.DataFrame) -> pd.DataFrame:
    """Return per method the best-β WGA gain along ρ and whether it is non-decreasing."""
    best = best_beta(summary)
    rows = []
    keys = [k for k in BASE_KEYS if k != "spurious_rho"]
    for key, g in best.groupby(keys, sort=True):
        if g["spurious_rho"].nunique() < 2:
            continue
        g = g.sort_values("spurious_rho")
        gains = g["gain_wga_mean"].to_numpy(float)
        rows.append({**dict(zip(keys, key)),
                     "rho": ", ".join(f"{r:g}" for r in g["spurious_rho"]),
                     "best_beta": ", ".join(f"{b:g}" for b in g["reg_beta"]),
                     "wga_gain": ", ".join(f"{x:+.3f}" for x in gains),
                     "non_decreasing": bool(np.all(np.diff(gains) >= 0))})
    return pd.DataFrame(rows)


def claims_1_2(summary: pd.DataFrame) -> pd.DataFrame:
    """Return per (method, ρ): claim 1 at β = 0 (runs whose PC1 probe predicts a better than y
    and a above chance; the mean accuracies) and claim 2 per β > 0 (seeds whose effective rank
    exceeds β = 0's, and the mean gain)."""
    rows = []
    for key, g in summary.groupby(BASE_KEYS, sort=True):
        base = g[g["reg_beta"] == 0]
        if base.empty:
            continue
        b = base.iloc[0]
        reg = g[g["reg_beta"] > 0].sort_values("reg_beta")
        rows.append({"ssl_method": key[0], "spurious_rho": key[BASE_KEYS.index("spurious_rho")],
                     "claim1 runs (β=0)": f"{b['claim1_runs']}/{b['n_seeds']}",
                     "PC1 acc a": b["pc_acc_a_mean"], "PC1 acc y": b["pc_acc_y_mean"],
                     "λ1/tr peak (β=0)": b["top_share_peak_mean"],
                     "claim2 seeds per β": ", ".join(
                         f"{r['reg_beta']:g}: {r['erank_up_runs']}/{r['n_seeds']} "
                         f"(+{r['gain_erank_mean']:.1f})" for _, r in reg.iterrows())})
    return pd.DataFrame(rows)


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the compact table: mean ± sd strings per (method, ρ, β)."""
    def pm(row: pd.Series, m: str, digits: int = 3) -> str:
        sd = row[f"{m}_sd"]
        return f"{row[f'{m}_mean']:.{digits}f} ± {0.0 if pd.isna(sd) else sd:.{digits}f}"

    rows = []
    for _, r in summary.iterrows():
        rows.append({"method": r["ssl_method"], "form": r["reg_form"], "rho": r["spurious_rho"],
                     "beta": r["reg_beta"], "seeds": r["n_seeds"], "WGA": pm(r, "wga"),
                     "avg acc": pm(r, "avg"),
                     "WGA gain": "" if r["reg_beta"] == 0 else pm(r, "gain_wga"),
                     "avg gain": "" if r["reg_beta"] == 0 else pm(r, "gain_avg"),
                     "WGA (ERM probe)": pm(r, "wga_erm"), "avg (ERM)": pm(r, "avg_erm"),
                     "eff. rank": pm(r, "erank", 1), "λ1/tr": pm(r, "top_share"),
                     "spur. align": pm(r, "spur_align"),
                     "PC1 acc a / y": f"{r['pc_acc_a_mean']:.2f} / {r['pc_acc_y_mean']:.2f}"})
    return pd.DataFrame(rows)


def notes(summary: pd.DataFrame) -> str:
    """Return markdown: the mean ± sd table, claim 3 (best β per method and ρ), claim 4."""
    from runner.report import markdown_table

    if summary.empty:
        return ""
    out = ["## Mean ± sd over seeds (gains paired by seed against β = 0)\n",
           markdown_table(display_table(summary))]
    c12 = claims_1_2(summary)
    if not c12.empty:
        out += ["## Claims 1 and 2: PC1 probe at β = 0 (chance 0.1), effective rank β > 0 vs 0\n",
                markdown_table(c12, digits=3)]
    best = best_beta(summary)
    if not best.empty:
        cols = ["ssl_method", "reg_form", "spurious_rho", "reg_beta", "n_seeds", "wga_mean",
                "gain_wga_mean", "gain_wga_sd", "gain_avg_mean", "gain_erank_mean", "claim3"]
        out += [f"## Claim 3: best β > 0 per (method, ρ); holds if WGA gain ≥ +{CLAIM3_GAIN:.2f} "
                "and average-accuracy gain ≥ 0\n", markdown_table(best[cols])]
    c4 = claim4(summary)
    if not c4.empty:
        out += ["## Claim 4: best-β WGA gain along ρ (non-decreasing?)\n", markdown_table(c4)]
    return "\n".join(out)


def read_curve(job_dir: str, column: str) -> pd.Series | None:
    """Return `column` of `<job_dir>/metrics.csv` indexed by step (rows where it is logged)."""
    path = Path(job_dir) / "metrics.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path)
    if column not in frame or "step" not in frame:
        return None
    rows = frame[["step", column]].dropna()
    return rows.groupby("step")[column].last()


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw effective rank and top-eigenvalue share of h over training (mean over seeds; one
    line per β, one column per method, at the ρ with the most β values); and WGA against β."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_table(results)
    if runs.empty:
        return []
    rho = runs.groupby("spurious_rho")["reg_beta"].nunique().idxmax()
    runs_rho = runs[runs["spurious_rho"] == rho]
    methods = sorted(runs_rho["ssl_method"].unique())
    fig, axes = plt.subplots(2, len(methods), figsize=(5 * len(methods), 7), squeeze=False)
    for col, method in enumerate(methods):
        g = runs_rho[runs_rho["ssl_method"] == method]
        for beta, gb in g.groupby("reg_beta"):
            for row, column in enumerate((CURVE, SHARE_CURVE)):
                curves = [c for c in (read_curve(j, column) for j in gb["job_dir"]) if c is not None]
                if not curves:
                    continue
                mean = pd.concat(curves, axis=1).mean(axis=1)
                axes[row, col].plot(mean.index, mean.to_numpy(), label=f"β = {beta:g}",
                                    lw=2.0 if beta == 0 else 1.2, ls="--" if beta == 0 else "-")
        axes[0, col].set_title(f"{method}, ρ = {rho:g} (mean of seeds)")
        axes[0, col].set_ylabel("effective rank of h (eval batch)")
        axes[1, col].set_ylabel("λ1 / tr C of h")
        axes[1, col].set_xlabel("step")
        axes[1, col].set_xscale("symlog", linthresh=10)
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "effective_rank_over_training.png"]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (method, r), g in summary.groupby(["ssl_method", "spurious_rho"]):
        g = g.sort_values("reg_beta")
        for ax, m in zip(axes, ("wga", "avg")):
            ax.errorbar(g["reg_beta"], g[f"{m}_mean"], yerr=g[f"{m}_sd"].fillna(0), marker="o",
                        capsize=3, label=f"{method}, ρ = {r:g}")
    for ax, name in zip(axes, ("worst-group acc (group-balanced probe)", "average acc")):
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_xlabel("β")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "accuracy_vs_beta.png")
    fig.savefig(paths[1], dpi=110)
    plt.close(fig)
    return paths
