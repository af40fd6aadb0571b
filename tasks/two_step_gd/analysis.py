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

from tasks.two_step_gd import theory

N_TERMS = 4          # terms k = 0..3 shown per grid point
MARGINAL = 0.15      # claim 2: terms with |e_k| < 0.15 are not scored
EXP_TOL = 0.15       # claim 2: |fitted − e_k| <= 0.15
GROWTH_MIN = 0.1     # claim 2: a term "exists" when its fitted exponent > 0.1
POINT_KEYS = ["alpha1", "alpha2", "target", "batch_reuse", "activation", "step_scale"]


def fit_exponent(widths: np.ndarray, values: np.ndarray) -> float:
    """Return the slope of the OLS fit of log value against log N."""
    return float(np.polyfit(np.log(widths), np.log(values), 1)[0])


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run with the settings and the measured numbers."""
    rows = []
    for r in results:
        if r.get("status") != "completed":
            continue
        pm = r["paper_metrics"]
        row = {k: pm[k] for k in POINT_KEYS}
        row.update({"n_hidden": int(pm["n_hidden"]), "seed": int(r["seed"]),
                    "outliers_w1": pm["outliers_w1"], "outliers_w2": pm["outliers_w2"],
                    "predicted_outliers_w2": pm["predicted_outliers_w2"],
                    "predicted_outliers_w2_strict": pm["predicted_outliers_w2_strict"],
                    "alignment_beta": pm["alignment_beta"],
                    "alignment_beta_w1": pm["alignment_beta_w1"],
                    "feature_spikes": pm["feature_spikes"],
                    "predicted_feature_spikes": pm["predicted_feature_spikes"],
                    "residual_rms_step2": pm["residual_rms_step2"],
                    "bulk_edge_dw2": pm["bulk_edge_dw2"],
                    "top_dw1": pm["top_singular_values_dw1"][0]})
        for k, value in enumerate(pm["top_singular_values_dw2"][:N_TERMS]):
            row[f"s{k}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def term_verdict(e_k: float, fitted: float) -> str:
    """Return the claim-2 verdict of one term: pass, FAIL, or marginal (|e_k| < 0.15, unscored)."""
    if abs(round(e_k, 9)) < MARGINAL:  # rounding: 0.45 − 2·0.3 is −0.1499999… in floats
        return "marginal"
    exists = fitted > GROWTH_MIN
    if e_k > 0:
        return "pass" if exists and abs(fitted - e_k) <= EXP_TOL else "FAIL"
    return "pass" if not exists else "FAIL"


def _exponents(g: pd.DataFrame) -> dict[str, float]:
    """Return per-seed-averaged exponents of s_k, s_k/rms(r1), the ΔW2 bulk and the ΔW1 top."""
    fits: dict[str, list[float]] = {}
    for _, gs in g.groupby("seed"):
        if gs["n_hidden"].nunique() < 2:
            continue
        gs = gs.sort_values("n_hidden")
        widths = gs["n_hidden"].to_numpy(float)
        resid = gs["residual_rms_step2"].to_numpy(float)
        for k in range(N_TERMS):
            s = gs[f"s{k}"].to_numpy(float)
            fits.setdefault(f"fit{k}", []).append(fit_exponent(widths, s))
            fits.setdefault(f"norm{k}", []).append(fit_exponent(widths, s / resid))
        fits.setdefault("fit_bulk", []).append(
            fit_exponent(widths, gs["bulk_edge_dw2"].to_numpy(float)))
        fits.setdefault("fit_resid", []).append(fit_exponent(widths, resid))
        fits.setdefault("fit_dw1", []).append(
            fit_exponent(widths, gs["top_dw1"].to_numpy(float)))
    return {k: float(np.mean(v)) for k, v in fits.items()}


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per grid point: predicted and measured counts (at the largest N), the
    fitted exponents of the top ΔW2 singular values next to e_k = α2 − k(1/2 − α1), and the
    claim-2 verdict per term (raw and residual-normalised exponents)."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=["alpha1", "alpha2", "predicted", "measured_w2"])
    rows = []
    for key, g in runs.groupby(POINT_KEYS, sort=True):
        point = dict(zip(POINT_KEYS, key))
        n_max = int(g["n_hidden"].max())
        top = g[g["n_hidden"] == n_max]
        row = {**point, "widths": ",".join(str(n) for n in sorted(g["n_hidden"].unique())),
               "n_seeds": int(g["seed"].nunique()),
               "predicted": int(top["predicted_outliers_w2"].iloc[0]),
               "predicted_strict": int(top["predicted_outliers_w2_strict"].iloc[0]),
               "measured_w2": float(top["outliers_w2"].mean()),
               "measured_w1": float(top["outliers_w1"].mean()),
               "alignment_beta": float(top["alignment_beta"].mean()),
               "alignment_beta_w1": float(top["alignment_beta_w1"].mean()),
               "feature_spikes": float(top["feature_spikes"].mean()),
               "predicted_feature_spikes": int(top["predicted_feature_spikes"].iloc[0])}
        fits = _exponents(g)
        e = theory.term_exponents(point["alpha1"], point["alpha2"], N_TERMS)
        for k in range(N_TERMS):
            row[f"e{k}"] = e[k]
            row[f"fit{k}"] = fits.get(f"fit{k}", np.nan)
            row[f"norm{k}"] = fits.get(f"norm{k}", np.nan)
            row[f"raw{k}"] = term_verdict(e[k], row[f"fit{k}"]) if f"fit{k}" in fits else ""
            row[f"nrm{k}"] = term_verdict(e[k], row[f"norm{k}"]) if f"norm{k}" in fits else ""
        row.update({"fit_bulk": fits.get("fit_bulk", np.nan),
                    "fit_resid": fits.get("fit_resid", np.nan),
                    "fit_dw1": fits.get("fit_dw1", np.nan)})
        rows.append(row)
    return pd.DataFrame(rows)


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
