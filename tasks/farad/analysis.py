"""Sweep aggregation for farad: bACC, GM and tail3 recall per method and (γ_l, γ_u), paired
differences by seed, the claims' verdicts, and the radially averaged amplitude spectra of the
data, the solid references and the Fourier clouds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tasks.base import aggregate
from tasks.farad.config import resolve_reference

METHODS = ("fixmatch", "cdmad-gray", "cdmad-ones", "farad")
SETTING = ["gamma_l", "gamma_u", "pseudo_label", "iterations"]
# the parameters that name a method (see method_label)
LABEL_PARAMS = ["method", "reference", "ref_refresh", "amp_source", "bias_average"]
METRICS = {"bacc": "balanced_acc", "gm": "gm_recall", "tail3": "tail3_recall",
           "corr": "bias_prior_corr", "bacc_raw": "balanced_acc_raw",
           "diag_corr_fourier": "diag_corr_fourier", "diag_corr_gray": "diag_corr_gray",
           "diag_corr_ones": "diag_corr_ones"}
WITH_SD = ("bacc", "gm", "tail3", "corr")
BASELINES = {"fm": "fixmatch", "cdg": "cdmad-gray"}
PAIRED = ("bacc", "tail3")
ACC_MARGIN = 0.01   # claims 2 and 3: "at most 1 point"
REVERSED, MATCHED = 0.1, 10.0


def method_label(params: dict[str, Any]) -> str:
    """Return fixmatch | cdmad-<resolved reference> | farad, with -bank / -per_image /
    -log_softmax suffixes for non-default FARAD settings."""
    if params["method"] == "cdmad":
        return f"cdmad-{resolve_reference(params['method'], params.get('reference', 'auto'))}"
    if params["method"] == "farad":
        extra = [params[k] for k, d in (("ref_refresh", "step"), ("amp_source", "mean"),
                                        ("bias_average", "logits")) if params.get(k, d) != d]
        return "-".join(["farad", *extra])
    return params["method"]


def runs_table(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per completed run: method label, seed, setting and the metrics."""
    runs = aggregate.runs_table(results, params=[*LABEL_PARAMS, *SETTING], metrics=METRICS,
                                require="balanced_acc")
    runs["method"] = [method_label(p) for p in runs[LABEL_PARAMS].to_dict("records")]
    return runs.drop(columns=["job_dir", *LABEL_PARAMS[1:]])


def _order(label: str) -> int:
    return METHODS.index(label) if label in METHODS else len(METHODS)


def summarize(results: list[dict[str, Any]]) -> pd.DataFrame:
    """Return one row per (γ_l, γ_u, pseudo_label, iterations, method): seeds, mean and sd over
    seeds of bACC, GM, tail3 recall, corr(b, log prior) (and the within-run diagnostic
    correlations of each reference), and the seed-paired differences of bACC and tail3 vs
    FixMatch (`_fm`) and vs CDMAD-gray (`_cdg`)."""
    runs = runs_table(results)
    if runs.empty:
        return pd.DataFrame(columns=["gamma_l", "gamma_u", "method", "n_seeds", "bacc"])
    runs["order"] = runs["method"].map(_order)
    diffs = []
    for name, label in BASELINES.items():
        for short in PAIRED:
            col = f"d{short}_{name}"
            runs[col] = aggregate.paired_difference(runs, [*SETTING, "seed"], "method", label,
                                                    short).to_numpy()
            diffs.append(col)
    by = [*SETTING, "order", "method"]
    table = aggregate.mean_sd(runs, by, [*METRICS, *diffs], mean_suffix="")
    columns = [*SETTING, "method", "n_seeds"]
    for short in METRICS:
        columns += [short, f"{short}_sd"] if short in WITH_SD else [short]
    for col in diffs:
        columns += [col, f"{col}_sd"]
    return table[columns]


def _value(summary: pd.DataFrame, setting: dict[str, Any], method: str, col: str) -> float:
    sel = summary[(summary["method"] == method)]
    for k, v in setting.items():
        sel = sel[np.isclose(sel[k], v)] if isinstance(v, float) else sel[sel[k] == v]
    return float(sel[col].iloc[0]) if len(sel) else np.nan


def claims(summary: pd.DataFrame) -> pd.DataFrame:
    """Return the verdict of each claim per (γ_l, pseudo_label, iterations): 1 (tail3 under
    reversed γ_u: FARAD > FixMatch and CDMAD-gray > FixMatch), 2 (reversed: bACC FARAD ≥
    CDMAD − 1 point, vs gray and ones), 3 (matched: bACC FARAD ≥ FixMatch − 1 point), 4 (corr(b,
    log prior) FARAD > CDMAD across runs, per γ_u; and within runs, Fourier b vs solid b on
    the same model)."""
    if summary.empty:
        return pd.DataFrame(columns=["claim", "setting", "verdict", "numbers"])
    rows = []

    def add(claim: str, setting: dict[str, Any], ok: float | bool, numbers: str) -> None:
        text = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in setting.items())
        verdict = "n/a" if ok is None else ("holds" if ok else "FAILS")
        rows.append({"claim": claim, "setting": text, "verdict": verdict, "numbers": numbers})

    outer = ["gamma_l", "pseudo_label", "iterations"]
    for key, g in summary.groupby(outer, sort=True):
        base = dict(zip(outer, key))
        rev, mat = {**base, "gamma_u": REVERSED}, {**base, "gamma_u": MATCHED}
        t = {m: _value(g, rev, m, "tail3") for m in METHODS}
        a = {m: _value(g, rev, m, "bacc") for m in METHODS}
        for m in ("farad", "cdmad-gray"):
            ok = None if np.isnan(t[m]) or np.isnan(t["fixmatch"]) else t[m] > t["fixmatch"]
            add(f"1 tail3 {m} > fixmatch (reversed)", rev, ok,
                f"{t[m]:.3f} vs {t['fixmatch']:.3f} (paired d = "
                f"{_value(g, rev, m, 'dtail3_fm'):+.3f} ± {_value(g, rev, m, 'dtail3_fm_sd'):.3f})")
        for ref in ("cdmad-gray", "cdmad-ones"):
            ok = None if np.isnan(a["farad"]) or np.isnan(a[ref]) else (
                a["farad"] >= a[ref] - ACC_MARGIN)
            add(f"2 bACC farad >= {ref} - 0.01 (reversed)", rev, ok,
                f"{a['farad']:.3f} vs {a[ref]:.3f}")
        fa, fm = _value(g, mat, "farad", "bacc"), _value(g, mat, "fixmatch", "bacc")
        ok = None if np.isnan(fa) or np.isnan(fm) else fa >= fm - ACC_MARGIN
        add("3 bACC farad >= fixmatch - 0.01 (matched)", mat, ok,
            f"{fa:.3f} vs {fm:.3f} (paired d = {_value(g, mat, 'farad', 'dbacc_fm'):+.3f} ± "
            f"{_value(g, mat, 'farad', 'dbacc_fm_sd'):.3f})")
        for gamma_u in sorted(g["gamma_u"].unique(), reverse=True):
            st = {**base, "gamma_u": float(gamma_u)}
            c = {m: _value(g, st, m, "corr") for m in ("farad", "cdmad-gray", "cdmad-ones")}
            ok = None if any(np.isnan(v) for v in c.values()) else (
                c["farad"] > max(c["cdmad-gray"], c["cdmad-ones"]))
            add("4 corr(b, log prior): farad > cdmad (across runs)", st, ok,
                f"farad {c['farad']:.3f}, gray {c['cdmad-gray']:.3f}, "
                f"ones {c['cdmad-ones']:.3f}")
            sel = g[np.isclose(g["gamma_u"], gamma_u)]
            w = {k: float(np.average(sel[f"diag_corr_{k}"], weights=sel["n_seeds"]))
                 for k in ("fourier", "gray", "ones")}
            ok = None if any(np.isnan(v) for v in w.values()) else (
                w["fourier"] > max(w["gray"], w["ones"]))
            add("4 corr(b, log prior): fourier b > solid b (same model)", st, ok,
                f"fourier {w['fourier']:.3f}, gray {w['gray']:.3f}, ones {w['ones']:.3f}")
    return pd.DataFrame(rows)


def notes(summary: pd.DataFrame) -> str:
    """Return markdown with the claims' verdicts (spec claims 1–4)."""
    if summary.empty:
        return ""
    from runner.report import markdown_table

    table = claims(summary)
    held = int((table["verdict"] == "holds").sum())
    scored = int((table["verdict"] != "n/a").sum())
    return (f"### Claims: {held} of {scored} scored checks hold\n\n"
            "Means over seeds; paired d = mean ± sd over seeds of the per-seed difference. "
            "Claim 4 within runs compares the b of each reference on the same final EMA model.\n\n"
            + markdown_table(table, digits=3))


# ------------------------------------------------------------------------------ spectra figure
def reference_profiles(seed: int = 0, n_clouds: int = 256, gamma_l: float = 10.0,
                       gamma_u: float = 10.0) -> dict[str, list[float]]:
    """Return the radially averaged amplitude spectra (raw pixel space) of the training images
    of one split (the data), of the solid references ("gray", "ones") and of `n_clouds` Fourier
    clouds (mean amplitude), as the module builds them."""
    import torch

    from tasks.farad.config import Config
    from tasks.farad.data import draw_split
    from tasks.farad.references import (
        amplitude_spectrum,
        fourier_clouds,
        mean_amplitude,
        radial_profile,
        solid_images,
    )

    cfg = Config(gamma_l=gamma_l, gamma_u=gamma_u)
    split = draw_split(seed, cfg.test_per_class, cfg.labeled_counts, cfg.unlabeled_counts)
    train = torch.cat([split["x_labeled"], split["x_unlabeled"]])
    mu, sd = float(split["x_labeled"].mean()), float(split["x_labeled"].std())
    gen = torch.Generator().manual_seed(seed)
    clouds = fourier_clouds(mean_amplitude(train), n_clouds, gen)
    shape = tuple(train.shape[1:])
    refs = {"data": train, "gray": solid_images(mu, 1, shape), "ones": solid_images(mu + sd, 1, shape),
            "fourier": clouds}
    return {k: radial_profile(amplitude_spectrum(v)).tolist() for k, v in refs.items()}


def plot_reference_spectra(profiles: dict[str, list[float]], out_path: Path) -> Path:
    """Draw the radial amplitude spectra (log scale; the solid references have only the DC
    term) and return `out_path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"data": ("k", "-", "o", "training images (mean |rfft2|)"),
             "fourier": ("C0", "--", "s", "Fourier clouds"),
             "gray": ("C1", ":", "^", "solid gray (CDMAD)"),
             "ones": ("C3", ":", "v", "solid ones (CDMAD code)")}
    fig, ax = plt.subplots(figsize=(5.5, 4))
    floor = 1e-4
    for name, values in profiles.items():
        color, line, marker, label = style.get(name, ("C7", "-", ".", name))
        v = np.maximum(np.asarray(values, float), floor)
        ax.plot(np.arange(v.size), v, color=color, linestyle=line, marker=marker, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("radial frequency |k| (cycles per 8 px)")
    ax.set_ylabel(f"radially averaged amplitude (floor {floor:g})")
    ax.set_title("amplitude spectra: data vs references")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot(summary: pd.DataFrame, results: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Draw the reference spectra figure (profiles from the first completed run, or recomputed)
    and bACC / tail3 per method and setting; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    profiles = next((r["paper_metrics"]["radial_amplitude"] for r in results
                     if r.get("status") == "completed"
                     and "radial_amplitude" in (r.get("paper_metrics") or {})), None)
    paths = [plot_reference_spectra(profiles or reference_profiles(), out_dir /
                                    "farad_reference_spectra.png")]
    settings = summary[["gamma_l", "gamma_u"]].drop_duplicates().sort_values(
        ["gamma_l", "gamma_u"], ascending=[True, False])
    methods = sorted(summary["method"].unique(), key=lambda m: (_order(m), m))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(settings))
    for ax, col in zip(axes, ("bacc", "tail3")):
        for i, m in enumerate(methods):
            means, sds = [], []
            for _, s in settings.iterrows():
                sel = summary[(summary["method"] == m) & np.isclose(summary["gamma_l"], s.gamma_l)
                              & np.isclose(summary["gamma_u"], s.gamma_u)]
                means.append(sel[col].mean() if len(sel) else np.nan)
                sds.append(sel[f"{col}_sd"].mean() if len(sel) else np.nan)
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width, yerr=sds,
                   label=m, capsize=2)
        ax.set_xticks(x, [f"γl={s.gamma_l:g}\nγu={s.gamma_u:g}" for _, s in settings.iterrows()])
        ax.set_ylabel({"bacc": "balanced accuracy", "tail3": "tail3 recall"}[col])
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle("mean ± sd over seeds")
    fig.tight_layout()
    path = out_dir / "farad_compare.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)
    return paths
