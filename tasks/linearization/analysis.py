"""Sweep aggregation for linearization: per-point means over seeds, and the rank correlations of
claim 1 (λ against the real-vs-linearized gap and ‖θ − θ0‖, lambda_sweep) and claim 3 (log κ of
the init NTK against the final train loss and the test accuracy across layer choices,
layer_choice), per downstream task and kernel.

A Spearman correlation is taken within one seed (the runs of a seed share one backbone and one
data draw) and then averaged over seeds; the correlation of the seed means is given beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate

POINT_KEYS = ["downstream", "loss", "prox_mode", "train_mode", "prox_lambda", "layers",
              "matrices", "lora_rank", "lora_init_b", "n_train", "finetune_steps", "lr"]
METRICS = ["kappa_plain", "kappa_sign", "kappa_plain_reg", "log_kappa_plain", "log_kappa_sign",
           "mu_min_plain", "mu_max_plain", "rel_gap", "kl_gap", "agreement", "theta_dist",
           "theta_dist_lin", "test_acc", "test_acc_lin", "test_acc_init", "final_train_loss",
           "final_train_loss_lin", "weyl_max_violation", "closed_form_rel_err"]
CLAIM1 = {"rel_gap": -0.8, "theta_dist": -0.8}          # Spearman(λ, ·) ≤ band
CLAIM3 = {"final_train_loss": 0.7, "test_acc": -0.5}      # Spearman(log κ, ·) ≥ / ≤ band
KERNELS = ("plain", "sign")


def _choice(value: Any, all_label: str = "all") -> str:
    """Return a list parameter as text: '0+2' / 'q+v'; None as `all_label`."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return all_label
    return "+".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: seed, job_dir, the point's settings (layers, matrices
    as text) and the paper metrics of METRICS."""
    keys = [k for k in POINT_KEYS if k not in ("layers", "matrices")]
    runs = aggregate.runs_table(results, params=[*keys, "lora_layers", "lora_matrices"],
                                metrics=METRICS, require="kappa_plain")
    if runs.empty:
        return runs.assign(layers=pd.Series(dtype=str), matrices=pd.Series(dtype=str))
    runs["layers"] = runs.pop("lora_layers").map(_choice)
    runs["matrices"] = runs.pop("lora_matrices").map(_choice)
    return runs


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per point (POINT_KEYS): n_seeds, mean and sd over seeds of METRICS; the
    runs table rides along in `.attrs["runs"]` (the claims correlate within seeds)."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=[*POINT_KEYS, "n_seeds"])
    table = aggregate.mean_sd(runs, POINT_KEYS, METRICS)
    table.attrs["runs"] = runs
    return table


def spearman(x: pd.Series | np.ndarray, y: pd.Series | np.ndarray) -> float:
    """Return Spearman's ρ of x and y over the pairs where both are finite (NaN with fewer than
    three such pairs or a constant side)."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.unique(x[keep]).size < 2 or np.unique(y[keep]).size < 2:
        return float("nan")
    return float(spearmanr(x[keep], y[keep]).statistic)


def _per_seed(group: pd.DataFrame, x: str, y: str) -> tuple[float, float, int, float]:
    """Return (mean over seeds of the within-seed Spearman(x, y), its sd, seeds counted,
    Spearman of the seed-mean values per x-point)."""
    rhos = [spearman(g[x], g[y]) for _, g in group.groupby("seed")]
    rhos = [r for r in rhos if np.isfinite(r)]
    point = group.groupby(x)[y].mean()
    pooled = spearman(point.index.to_numpy(dtype=float), point.to_numpy(dtype=float))
    sd = float(np.std(rhos, ddof=1)) if len(rhos) > 1 else float("nan")
    return (float(np.mean(rhos)) if rhos else float("nan")), sd, len(rhos), pooled


def claim1(runs: pd.DataFrame) -> pd.DataFrame:
    """Return per (downstream, settings) with ≥ 3 λ values and a linearized twin: Spearman(λ,
    rel_gap) and Spearman(λ, ‖θ − θ0‖), within seeds then averaged; verdict ≤ −0.8 each."""
    keys = [k for k in POINT_KEYS if k != "prox_lambda"]
    rows = []
    both = runs[runs["train_mode"] == "both"]
    for key, g in both.groupby(keys, sort=True, dropna=False):
        if g["prox_lambda"].nunique() < 3:
            continue
        at = dict(zip(keys, key))
        row = {"downstream": at["downstream"], "prox_mode": at["prox_mode"],
               "layers": at["layers"], "matrices": at["matrices"],
               "lambdas": g["prox_lambda"].nunique(), "seeds": g["seed"].nunique()}
        ok = True
        for metric, band in CLAIM1.items():
            mean, sd, _, pooled = _per_seed(g, "prox_lambda", metric)
            row[f"rho(λ, {metric})"] = mean
            row[f"rho(λ, {metric}) sd"] = sd
            row[f"rho(λ, {metric}) of means"] = pooled
            ok = ok and np.isfinite(mean) and mean <= band
        row["claim1"] = "reproduced" if ok else "not reproduced"
        rows.append(row)
    return pd.DataFrame(rows)


def claim3(runs: pd.DataFrame) -> pd.DataFrame:
    """Return per (downstream, settings, kernel) with ≥ 3 layer choices: Spearman(log κ,
    final train loss) and Spearman(log κ, test accuracy) across layer choices, within seeds
    then averaged; verdict: ≥ +0.7 and ≤ −0.5."""
    keys = [k for k in POINT_KEYS if k not in ("layers", "matrices")]
    runs = runs.assign(choice=runs["layers"] + ":" + runs["matrices"])
    rows = []
    for key, g in runs.groupby(keys, sort=True, dropna=False):
        if g["choice"].nunique() < 3:
            continue
        for kernel in KERNELS:
            col = f"log_kappa_{kernel}"
            if g[col].notna().sum() < 3:
                continue
            at = dict(zip(keys, key))
            row = {"downstream": at["downstream"], "prox_lambda": at["prox_lambda"],
                   "kernel": kernel,
                   "choices": g["choice"].nunique(), "seeds": g["seed"].nunique()}
            ok = True
            for metric, band in CLAIM3.items():
                mean, sd, _, pooled = _per_seed(g, col, metric)
                row[f"rho(log κ, {metric})"] = mean
                row[f"rho(log κ, {metric}) sd"] = sd
                row[f"rho(log κ, {metric}) of means"] = _choice_means(g, col, metric)
                ok = ok and np.isfinite(mean) and (mean >= band if band > 0 else mean <= band)
                del pooled
            row["test_acc range"] = f"{g['test_acc'].min():.3f}–{g['test_acc'].max():.3f}"
            row["claim3"] = "reproduced" if ok else "not reproduced"
            rows.append(row)
    return pd.DataFrame(rows)


def _choice_means(g: pd.DataFrame, x: str, y: str) -> float:
    """Return Spearman of the per-choice seed means of x and y."""
    means = g.groupby("choice")[[x, y]].mean()
    return spearman(means[x], means[y])


def notes(summary: pd.DataFrame) -> str:
    """Return markdown: the per-point table and, from its runs (`summary.attrs["runs"]`),
    claims 1 and 3."""
    from runner.report import markdown_table

    if summary.empty:
        return ""
    cols = ["downstream", "prox_mode", "prox_lambda", "layers", "matrices", "n_seeds",
            "kappa_plain_mean", "kappa_sign_mean", "kappa_plain_reg_mean", "rel_gap_mean",
            "rel_gap_sd", "kl_gap_mean", "agreement_mean", "theta_dist_mean", "test_acc_mean",
            "test_acc_sd", "test_acc_lin_mean", "final_train_loss_mean"]
    out = ["## Mean ± sd over seeds per point\n", markdown_table(summary[cols], digits=4)]
    runs = summary.attrs.get("runs")
    if runs is not None:
        c1, c3 = claim1(runs), claim3(runs)
        if not c1.empty:
            out += ["## Claim 1: Spearman(λ, relative gap) and Spearman(λ, ‖θ − θ0‖) ≤ −0.8 "
                    "(within seeds, averaged)\n", markdown_table(c1, digits=3)]
        if not c3.empty:
            out += ["## Claim 3: Spearman(log κ, final train loss) ≥ +0.7 and Spearman(log κ, "
                    "test accuracy) ≤ −0.5 across layer choices (within seeds, averaged)\n",
                    markdown_table(c3, digits=3)]
    return "\n".join(out)


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw log κ against test accuracy (per downstream, both kernels; one point per run) and
    the relative gap and ‖θ − θ0‖ against λ (mean ± sd over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_table(results)
    paths: list[Path] = []
    if runs.empty:
        return paths
    tasks = sorted(runs["downstream"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    for ax, kernel in zip(axes[0], KERNELS):
        for task in tasks:
            g = runs[runs["downstream"] == task]
            ax.scatter(g[f"kappa_{kernel}"], g["test_acc"], s=14, label=task)
        ax.set_xscale("log")
        ax.set_xlabel(f"κ of the {kernel} LoRA NTK at init")
        ax.set_ylabel("test accuracy (LoRA)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / "kappa_vs_accuracy.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    lam = summary[summary["train_mode"] == "both"]
    if lam["prox_lambda"].nunique() >= 2:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for key, g in lam.groupby(["downstream", "layers", "matrices"]):
            if g["prox_lambda"].nunique() < 2:
                continue
            g = g.sort_values("prox_lambda")
            for ax, m in zip(axes, ("rel_gap", "theta_dist")):
                ax.errorbar(g["prox_lambda"], g[f"{m}_mean"], yerr=g[f"{m}_sd"].fillna(0),
                            marker="o", capsize=3, label=f"{key[0]} ({key[1]}:{key[2]})")
        for ax, name in zip(axes, ("relative gap ‖f − f_lin‖/‖f‖", "‖θ − θ0‖ (LoRA)")):
            ax.set_xscale("symlog", linthresh=1e-4)
            ax.set_xlabel("λ")
            ax.set_ylabel(name)
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        paths.append(out_dir / "gap_vs_lambda.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
