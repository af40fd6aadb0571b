"""Sweep aggregation for two_step_gd: growth exponents of the ΔW2 singular values and the claims.

Term k of the second update is read off the (k+1)-th singular value of ΔW2 = W2 − W1; its growth
exponent is the OLS slope of log s_{k+1} against log N, fitted per seed and averaged. The
"normalised" exponent fits s_{k+1}/rms(r1) instead, r1 = y − f(W1) on the step-2 batch (the
residual that multiplies the step-2 gradient; it grows with N when η1 ≫ 1, see the README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate
from tasks.two_step_gd import theory

N_TERMS = 4          # terms k = 0..3 shown per grid point
MARGINAL = 0.15      # claim 2: terms with |e_k| < 0.15 are not scored
EXP_TOL = 0.15       # claim 2: |fitted − e_k| <= 0.15
GROWTH_MIN = 0.1     # claim 2: a term "exists" when its fitted exponent > 0.1
POINT_KEYS = ["alpha1", "alpha2", "target", "batch_reuse", "activation", "step_scale"]
# summary column: paper metric, averaged over seeds (MEASURED) or the theory's value (PREDICTED),
# at the largest N of a grid point
MEASURED = {"measured_w2": "outliers_w2", "measured_w1": "outliers_w1",
            "alignment_beta": "alignment_beta", "alignment_beta_w1": "alignment_beta_w1",
            "feature_spikes": "feature_spikes"}
PREDICTED = {"predicted_outliers_w2": "predicted", "predicted_outliers_w2_strict":
             "predicted_strict", "predicted_feature_spikes": "predicted_feature_spikes"}
METRICS = [*MEASURED.values(), *PREDICTED, "residual_rms_step2", "bulk_edge_dw2"]
# per-seed slopes against log N (averaged over seeds in the summary)
FITS = [*(f"{kind}{k}" for k in range(N_TERMS) for kind in ("fit", "norm")),
        "fit_bulk", "fit_resid", "fit_dw1"]


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: the grid point and N (from `params`), the seed and the
    measured numbers, with top_dw1 = s1(ΔW1) and s0..s3 the top singular values of ΔW2."""
    runs = aggregate.runs_table(results, params=[*POINT_KEYS, "n_hidden"], metrics=[
        *METRICS, "top_singular_values_dw1", "top_singular_values_dw2"])
    runs["top_dw1"] = [v[0] for v in runs.pop("top_singular_values_dw1")]
    tops = runs.pop("top_singular_values_dw2").tolist()
    for k in range(N_TERMS):
        runs[f"s{k}"] = [v[k] for v in tops]
    return runs


def term_verdict(e_k: float, fitted: float) -> str:
    """Return the claim-2 verdict of one term: pass, FAIL, or marginal (|e_k| < 0.15, unscored)."""
    if abs(round(e_k, 9)) < MARGINAL:  # rounding: 0.45 − 2·0.3 is −0.1499999… in floats
        return "marginal"
    exists = fitted > GROWTH_MIN
    if e_k > 0:
        return "pass" if exists and abs(fitted - e_k) <= EXP_TOL else "FAIL"
    return "pass" if not exists else "FAIL"


def per_seed_fits(runs: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (grid point, seed with >= 2 widths): the slopes of log s_k, of
    log s_k/rms(r1), of the ΔW2 bulk edge, of rms(r1) and of the ΔW1 top against log N."""
    rows = []
    for key, gs in runs.groupby([*POINT_KEYS, "seed"], sort=True):
        if gs["n_hidden"].nunique() < 2:
            continue
        gs = gs.sort_values("n_hidden")
        widths, resid = gs["n_hidden"], gs["residual_rms_step2"].to_numpy(float)
        row = dict(zip([*POINT_KEYS, "seed"], key))
        for k in range(N_TERMS):
            s = gs[f"s{k}"].to_numpy(float)
            row[f"fit{k}"] = aggregate.fit_power_law(widths, s)
            row[f"norm{k}"] = aggregate.fit_power_law(widths, s / resid)
        row["fit_bulk"] = aggregate.fit_power_law(widths, gs["bulk_edge_dw2"])
        row["fit_resid"] = aggregate.fit_power_law(widths, resid)
        row["fit_dw1"] = aggregate.fit_power_law(widths, gs["top_dw1"])
        rows.append(row)
    return pd.DataFrame(rows, columns=[*POINT_KEYS, "seed", *FITS])


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per grid point: predicted and measured counts (at the largest N), the
    fitted exponents of the top ΔW2 singular values next to e_k = α2 − k(1/2 − α1), and the
    claim-2 verdict per term (raw and residual-normalised exponents)."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=["alpha1", "alpha2", "predicted", "measured_w2"])
    points = runs.groupby(POINT_KEYS, sort=True)
    table = points.agg(widths=("n_hidden", lambda n: ",".join(str(v) for v in sorted(set(n)))),
                       n_seeds=("seed", "nunique")).reset_index()
    top = runs[runs["n_hidden"] == points["n_hidden"].transform("max")]
    first = top.groupby(POINT_KEYS, sort=True).first().reset_index()
    first = first[[*POINT_KEYS, *PREDICTED]].rename(columns=PREDICTED)
    measured = aggregate.mean_sd(top, POINT_KEYS, list(MEASURED.values()))
    measured = measured[[*POINT_KEYS, *(f"{m}_mean" for m in MEASURED.values())]]
    measured.columns = [*POINT_KEYS, *MEASURED]
    fits = per_seed_fits(runs)
    fitted = (aggregate.mean_sd(fits, POINT_KEYS, FITS, mean_suffix="")[[*POINT_KEYS, *FITS]]
              if not fits.empty else pd.DataFrame(columns=[*POINT_KEYS, *FITS]))
    table = (table.merge(first, on=POINT_KEYS).merge(measured, on=POINT_KEYS)
             .merge(fitted, on=POINT_KEYS, how="left", indicator="fitted"))
    have = table.pop("fitted") == "both"  # a point with a seed of >= 2 widths
    table = table.astype({**{c: int for c in PREDICTED.values()}, **{c: float for c in FITS}})
    columns = [*POINT_KEYS, "widths", "n_seeds", "predicted", "predicted_strict", *MEASURED,
               "predicted_feature_spikes"]
    for k in range(N_TERMS):
        e = [theory.term_exponents(a1, a2, N_TERMS)[k]
             for a1, a2 in zip(table["alpha1"], table["alpha2"])]
        table[f"e{k}"] = e
        for kind, verdict in (("fit", "raw"), ("norm", "nrm")):
            table[f"{verdict}{k}"] = [term_verdict(e_k, v) if ok else ""
                                      for e_k, v, ok in zip(e, table[f"{kind}{k}"], have)]
        columns += [f"e{k}", f"fit{k}", f"norm{k}", f"raw{k}", f"nrm{k}"]
    return table[[*columns, "fit_bulk", "fit_resid", "fit_dw1"]]


def claim3(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the monotonicity checks of claim 3: count(W2) at the largest N along α2 (fixed α1)
    and along α1 (fixed α2), each consecutive pair with `ok` = non-decreasing."""
    rows = []
    for fixed, vary in (("alpha1", "alpha2"), ("alpha2", "alpha1")):
        for value, g in summary.groupby(fixed):
            g = g.sort_values(vary)
            for (_, lo), (_, hi) in zip(g.iloc[:-1].iterrows(), g.iloc[1:].iterrows()):
                rows.append({"fixed": f"{fixed}={value:g}",
                             "from": f"{vary}={lo[vary]:g}: {lo['measured_w2']:.2f}",
                             "to": f"{vary}={hi[vary]:g}: {hi['measured_w2']:.2f}",
                             "ok": bool(hi["measured_w2"] >= lo["measured_w2"])})
    return pd.DataFrame(rows)


def verdict_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the claim-2 scoring in long form: one row per (grid point, term k)."""
    rows = []
    for _, r in summary.iterrows():
        for k in range(N_TERMS):
            rows.append({"alpha1": r["alpha1"], "alpha2": r["alpha2"], "k": k,
                         "e_k": r[f"e{k}"], "fitted": r[f"fit{k}"], "raw": r[f"raw{k}"],
                         "normalised": r[f"norm{k}"], "norm_verdict": r[f"nrm{k}"]})
    return pd.DataFrame(rows)


def notes(summary: pd.DataFrame) -> str:
    """Return markdown: claim 2 per term, claim 3 monotonicity, claims 1, 4 and 5 in short."""
    from runner.report import markdown_table

    if summary.empty:
        return ""
    out = []
    main = summary[["alpha1", "alpha2", "target", "batch_reuse", "widths", "n_seeds",
                    "predicted", "predicted_strict", "measured_w2", "measured_w1",
                    *[c for k in range(N_TERMS) for c in (f"e{k}", f"fit{k}")]]]
    out += ["## Outlier law per grid point (counts at the largest N; exponents of s_{k+1}(ΔW2))\n",
            markdown_table(main, digits=2)]
    verdicts = verdict_table(summary)
    scored = verdicts[verdicts["raw"] != "marginal"]
    out += ["## Claim 2, per term (|e_k| ≥ 0.15 scored; raw and residual-normalised exponent)\n",
            markdown_table(verdicts, digits=2),
            f"raw: {int((scored['raw'] == 'pass').sum())}/{len(scored)} pass; normalised: "
            f"{int((scored['norm_verdict'] == 'pass').sum())}/{len(scored)} pass\n"]
    c3 = claim3(summary[summary["target"] == "ie1"]) if "ie1" in set(summary["target"]) else None
    if c3 is not None and not c3.empty:
        out += ["## Claim 3: count(W2) at the largest N, non-decreasing along α2 and α1\n",
                markdown_table(c3), f"{int(c3['ok'].sum())}/{len(c3)} steps non-decreasing\n"]
    c1 = summary[summary["alpha1"] >= 0.2][["alpha1", "alpha2", "target", "batch_reuse",
                                            "measured_w1", "alignment_beta_w1", "fit_dw1"]]
    if not c1.empty:
        out += ["## Claim 1: one step (W1 outliers at the largest N, |⟨v, β⟩|, growth of "
                "‖ΔW1‖ vs α1)\n", markdown_table(c1, digits=3)]
    if summary["batch_reuse"].nunique() > 1:
        pivot = summary.pivot_table(index=["alpha1", "alpha2", "target"], columns="batch_reuse",
                                    values="alignment_beta").reset_index()
        pivot.columns = [str(c) for c in pivot.columns]
        pivot["reuse_minus_independent"] = pivot["True"] - pivot["False"]
        out += ["## Claim 4: best |⟨v_k, β⟩| over the W2 outliers, reuse vs independent\n",
                markdown_table(pivot, digits=3)]
    spikes = summary[["alpha1", "alpha2", "predicted_feature_spikes", "feature_spikes"]]
    out += ["## Claim 5: spikes of σ(X W1ᵀ) (one-step law, largest N)\n",
            markdown_table(spikes, digits=2)]
    return "\n".join(out)


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw the top singular values of ΔW2 against N (log-log), one panel per grid point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_table(results)
    if runs.empty or runs["n_hidden"].nunique() < 2:
        return []
    groups = list(runs.groupby(POINT_KEYS, sort=True))
    cols = min(3, len(groups))
    rows = int(np.ceil(len(groups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, (key, g) in zip(axes.flat, groups):
        point = dict(zip(POINT_KEYS, key))
        mean = g.groupby("n_hidden")[[f"s{k}" for k in range(N_TERMS)]].mean()
        widths = mean.index.to_numpy(float)
        e = theory.term_exponents(point["alpha1"], point["alpha2"], N_TERMS)
        for k in range(N_TERMS):
            line, = ax.loglog(widths, mean[f"s{k}"], marker="o", label=f"s{k + 1}")
            ref = mean[f"s{k}"].iloc[0] * (widths / widths[0]) ** e[k]
            ax.loglog(widths, ref, ls=":", color=line.get_color())
        ax.set_title(f"α1={point['alpha1']:g}, α2={point['alpha2']:g}, {point['target']}"
                     f"{', reuse' if point['batch_reuse'] else ''}", fontsize=9)
        ax.set_xlabel("N")
        ax.set_ylabel("singular value of ΔW2")
    axes.flat[0].legend(fontsize=7, title="dotted: N^{e_k}", title_fontsize=7)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.tight_layout()
    path = out_dir / "dw2_singular_values_vs_width.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
