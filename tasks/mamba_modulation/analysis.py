"""Sweep aggregation for mamba_modulation: the length-generalisation table, A vs Δ, the claims.

One run = one (setting, a_init, intervention, seed). Claims (../shared/papers/mamba_modulation.md):
1. failure exists without intervention: gap_16x >= 0.5 nats (lm) / accuracy drop >= 0.3 (passkey);
2. A beats Δ: recovered_frac(a_power_spsa) − recovered_frac(delta_spsa) >= 0.10 (lm, mean over
   the seeds where claim 1 holds; passkey: acc_A − acc_Δ at 16x >= 10 pp), same calibrator;
3. both cost little at L_train: cost_at_train_len <= 0.02 nats (lm) / 2 pp (passkey);
4. control (a_init=standard): the same table; no A-over-Δ advantage is expected.
A seed where claim 1 fails is "no failure, comparison void" for claims 2–3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate

POINT = ["setting", "a_init", "intervention"]
VALUES = ["gap_16x", "recovered_frac", "cost_at_train_len", "metric_first", "metric_last",
          "metric_last_int", "scale_last_mean"]
CLAIM1 = {"lm": 0.5, "passkey": 0.3}
CLAIM2 = 0.10
CLAIM3 = {"lm": 0.02, "passkey": 0.02}
A_ARM, DELTA_ARM = "a_power_spsa", "delta_spsa"


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run with the grid point, seed, gap_16x, recovered_frac,
    cost_at_train_len, void, the metric at the smallest and largest length (without / with the
    intervention), the mean scale at the largest length and the per-length curves."""
    runs = aggregate.runs_table(results, params=POINT, metrics=[
        "gap_16x", "recovered_frac", "cost_at_train_len", "void", "tail_ce",
        "tail_ce_intervention", "accuracy", "accuracy_intervention", "scales"],
        require="gap_16x")
    first, last, last_int, scale, curves = [], [], [], [], []
    for _, r in runs.iterrows():
        none = r["tail_ce"] if r["setting"] == "lm" else r["accuracy"]
        inter = r["tail_ce_intervention"] if r["setting"] == "lm" else r["accuracy_intervention"]
        lengths = sorted(none, key=int)
        first.append(float(none[lengths[0]]))
        last.append(float(none[lengths[-1]]))
        last_int.append(float(inter[lengths[-1]]))
        s = r["scales"][lengths[-1]]
        used = s["delta"] if r["intervention"] == DELTA_ARM else s["a_power"]
        scale.append(float(np.mean(used)))
        curves.append({int(k): (float(none[k]), float(inter[k])) for k in lengths})
    runs["metric_first"], runs["metric_last"], runs["metric_last_int"] = first, last, last_int
    runs["scale_last_mean"] = scale
    runs["curves"] = curves
    runs["void"] = runs["void"].astype(bool) if len(runs) else runs["void"]
    return runs


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per (setting, a_init, intervention): n_seeds, n_void (seeds without the
    failure), and mean ± sd over seeds of gap_16x, the metric at the smallest / largest length
    (without and with the intervention), recovered_frac and cost_at_train_len (over the
    non-void seeds) and the mean scale at the largest length."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=[*POINT, "n_seeds", "n_void"])
    valid = runs[~runs["void"]]
    table = runs.groupby(POINT, sort=True).agg(n_seeds=("seed", "nunique"),
                                               n_void=("void", "sum")).reset_index()
    every = aggregate.mean_sd(runs, POINT, ["gap_16x", "metric_first", "metric_last",
                                            "metric_last_int", "scale_last_mean"])
    table = table.merge(every.drop(columns="n_seeds"), on=POINT, how="left")
    if not valid.empty:
        ok = aggregate.mean_sd(valid, POINT, ["recovered_frac", "cost_at_train_len"])
        table = table.merge(ok.drop(columns="n_seeds"), on=POINT, how="left")
    for col in ("recovered_frac_mean", "recovered_frac_sd", "cost_at_train_len_mean",
                "cost_at_train_len_sd"):
        if col not in table:
            table[col] = np.nan
    table["n_void"] = table["n_void"].astype(int)
    return table


def _row(summary: pd.DataFrame, setting: str, a_init: str, arm: str) -> pd.Series | None:
    sel = summary[(summary["setting"] == setting) & (summary["a_init"] == a_init)
                  & (summary["intervention"] == arm)]
    return None if sel.empty else sel.iloc[0]


def verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (claim, setting, a_init): the measured number (means over seeds), the
    band and the verdict: pass / FAIL / "no failure, comparison void" (claim 1 fails on every
    seed) / "not run". Claim 1 is read from every run of the point (gap_16x does not depend
    on the intervention); claims 2–3 from the seeds where claim 1 holds."""
    rows = []
    for (setting, a_init), g in summary.groupby(["setting", "a_init"], sort=True):
        band = CLAIM1[setting]
        ref = g.iloc[0]
        n_void, n = int(ref["n_void"]), int(ref["n_seeds"])
        rows.append({"claim": "1 failure exists", "setting": setting, "a_init": a_init,
                     "measured": f"gap_16x {ref['gap_16x_mean']:.3f} ± "
                                 f"{ref['gap_16x_sd']:.3f} ({n} seeds)",
                     "band": f">= {band}", "verdict": "pass" if n_void == 0
                     else f"FAIL on {n_void}/{n} seeds"})
        a_row, d_row = _row(summary, setting, a_init, A_ARM), _row(summary, setting, a_init,
                                                                  DELTA_ARM)
        claim = "2 A beats Δ" if a_init == "long_memory" else "4 control: A vs Δ"
        if a_row is None or d_row is None:
            rows.append({"claim": claim, "setting": setting, "a_init": a_init,
                         "measured": "", "band": "", "verdict": "not run"})
        elif a_row["n_void"] == a_row["n_seeds"] or d_row["n_void"] == d_row["n_seeds"]:
            rows.append({"claim": claim, "setting": setting, "a_init": a_init, "measured": "",
                         "band": "", "verdict": "no failure, comparison void"})
        else:
            col = "recovered_frac_mean" if setting == "lm" else "metric_last_int_mean"
            diff = float(a_row[col] - d_row[col])
            measured = (f"A {a_row[col]:.3f} vs Δ {d_row[col]:.3f}: A − Δ = {diff:.3f} "
                        f"({int(a_row['n_seeds'] - a_row['n_void'])} non-void seeds)")
            if a_init == "long_memory":
                verdict = "pass" if diff >= CLAIM2 else "FAIL"
                rows.append({"claim": claim, "setting": setting, "a_init": a_init,
                             "measured": measured, "band": f">= {CLAIM2}", "verdict": verdict})
            else:
                rows.append({"claim": claim, "setting": setting, "a_init": a_init,
                             "measured": measured, "band": "no advantage expected",
                             "verdict": "advantage" if diff >= CLAIM2 else "no advantage"})
        for arm in (A_ARM, DELTA_ARM, "a_power_uniform", "a_backprop"):
            r = _row(summary, setting, a_init, arm)
            if r is None:
                continue
            if r["n_void"] == r["n_seeds"]:
                verdict, measured = "no failure, comparison void", ""
            else:
                cost = float(r["cost_at_train_len_mean"])
                measured = f"{cost:.4f}"
                verdict = "pass" if cost <= CLAIM3[setting] else "FAIL"
            rows.append({"claim": f"3 cost at L_train ({arm})", "setting": setting,
                         "a_init": a_init, "measured": measured,
                         "band": f"<= {CLAIM3[setting]}", "verdict": verdict})
    return pd.DataFrame(rows, columns=["claim", "setting", "a_init", "measured", "band",
                                       "verdict"])


def notes(summary: pd.DataFrame) -> str:
    """Return markdown: the table per a_init (metric at the smallest and largest length, the
    share of the gap each intervention recovers, the cost at L_train) and the claim verdicts."""
    from runner.report import markdown_table

    if summary.empty:
        return ""
    out = []
    for a_init, g in summary.groupby("a_init", sort=True):
        cols = [*POINT, "n_seeds", "n_void", "metric_first_mean", "metric_last_mean",
                "metric_last_int_mean", "recovered_frac_mean", "recovered_frac_sd",
                "cost_at_train_len_mean", "scale_last_mean_mean"]
        out += [f"## a_init = {a_init}: metric at the smallest / largest length, share of the "
                "gap recovered\n", markdown_table(g[cols], digits=3)]
    out += ["## Claim verdicts\n", markdown_table(verdicts(summary))]
    return "\n".join(out)


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw the metric against length per intervention (one panel per setting × a_init, mean
    over seeds) and the per-layer scales against length; print the claim verdicts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_table(results)
    if runs.empty:
        return []
    paths = []
    groups = list(runs.groupby(["setting", "a_init"], sort=True))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 3.8), squeeze=False)
    for ax, ((setting, a_init), g) in zip(axes[0], groups):
        none_drawn = False
        for arm, ga in g.groupby("intervention", sort=True):
            lengths = sorted(ga["curves"].iloc[0])
            none = np.mean([[c[L][0] for L in lengths] for c in ga["curves"]], axis=0)
            inter = np.mean([[c[L][1] for L in lengths] for c in ga["curves"]], axis=0)
            if not none_drawn:
                ax.plot(lengths, none, "k-o", label="none")
                none_drawn = True
            if arm != "none":
                ax.plot(lengths, inter, "--o", label=arm)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("evaluation length L")
        ax.set_ylabel("tail CE (nats)" if setting == "lm" else "passkey accuracy")
        ax.set_title(f"{setting}, a_init={a_init}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "metric_vs_length.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    scaled = runs[runs["intervention"] != "none"]
    if not scaled.empty:
        arms = list(scaled.groupby(["a_init", "intervention"], sort=True))
        fig, axes = plt.subplots(1, len(arms), figsize=(4.2 * len(arms), 3.4), squeeze=False)
        for ax, ((a_init, arm), ga) in zip(axes[0], arms):
            for _, r in ga.iterrows():
                res = next(x for x in results if x.get("job_dir") == r["job_dir"])
                scales = res["paper_metrics"]["scales"]
                lengths = sorted(scales, key=int)
                kind = "delta" if arm == DELTA_ARM else "a_power"
                per_layer = np.array([scales[L][kind] for L in lengths])
                for layer in range(per_layer.shape[1]):
                    ax.plot([int(L) for L in lengths], per_layer[:, layer], "-o", ms=3,
                            label=f"seed {r['seed']} layer {layer}")
            ax.set_xscale("log", base=2)
            ax.set_title(f"{arm} ({a_init})", fontsize=9)
            ax.set_xlabel("L")
            ax.set_ylabel("scale s_l")
            ax.legend(fontsize=6)
        fig.tight_layout()
        paths.append(out_dir / "scales_vs_length.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
