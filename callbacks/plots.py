"""Pictures of spectra over training: rank plots for real spectra, clouds for complex ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

RELATIVE_FLOOR = 1e-12  # real spectra are drawn down to this fraction of their largest value


def shown_steps(n_steps: int, max_lines: int) -> list[int]:
    """Return at most `max_lines` indices into `n_steps` logged steps, evenly spread, always
    holding the first and the last."""
    if n_steps <= max_lines:
        return list(range(n_steps))
    return sorted({round(i * (n_steps - 1) / (max_lines - 1)) for i in range(max_lines)})


def plot_probe(history: dict[str, tuple[list[int], list[np.ndarray]]], out: Path, title: str,
               references: dict[str, dict[str, Any]] | None = None, max_panels: int = 12,
               max_lines: int = 16) -> None:
    """Save one figure with a panel per array name.

    Real spectra: |λ_k| against rank k on log-log axes, one line per logged step (at most
    `max_lines`, evenly spread over training) coloured from early (dark) to late (yellow). Complex spectra: the eigenvalue cloud of the first and last
    step in the complex plane, with the reference circle (`radius`) and reference outliers
    (`outliers`) from `references[name]` when given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    names = [n for n, (_, rows) in history.items() if rows][:max_panels]
    cols = min(3, len(names))
    rows_n = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.6 * cols, 3.8 * rows_n), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, name in zip(axes.ravel(), names):
        steps, spectra = history[name]
        ref = (references or {}).get(name, {})
        if any(np.iscomplexobj(s) and np.abs(s.imag).max(initial=0) > 0 for s in spectra):
            _complex_panel(ax, steps, spectra, ref)
        else:
            low, high = np.inf, 0.0
            for i in shown_steps(len(steps), max_lines):
                vals = np.sort(np.abs(np.real(spectra[i])))[::-1]
                # below 1e-12·max a float64 eigenvalue is rounding noise (a rank-deficient
                # covariance would otherwise stretch the axis over 80 decades)
                vals = vals[vals > RELATIVE_FLOOR * vals.max(initial=0.0)]
                if vals.size:
                    low, high = min(low, vals[-1]), max(high, vals[0])
                    colour = cmap(i / max(1, len(steps) - 1))
                    ax.loglog(np.arange(1, vals.size + 1), vals, color=colour, lw=1,
                              label=f"step {steps[i]}" if i in (0, len(steps) - 1) else None)
            if "edge" in ref:
                ax.axhline(ref["edge"], color="red", ls="--", lw=1, label="bulk edge")
            # log-axis minor ticks were most of the drawing time (seconds for 12 panels); the
            # y axis keeps them when the values span under two decades (else no label shows)
            ax.xaxis.set_minor_locator(NullLocator())
            if high <= 0 or high / low > 100:
                ax.yaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("rank k")
            ax.set_ylabel("|λ_k|")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(name, fontsize=9, y=1.0)  # a fixed y skips matplotlib's title layout pass
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    fig.suptitle(title)
    # fixed margins: tight_layout measured every tick label of every panel (slow)
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=0.95 / width, right=1 - 0.15 / width, bottom=0.55 / height,
                        top=1 - 0.7 / height, wspace=0.35, hspace=0.5)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _complex_panel(ax: Any, steps: list[int], spectra: list[np.ndarray],
                   ref: dict[str, Any]) -> None:
    first, last = spectra[0], spectra[-1]
    if len(spectra) > 1:
        ax.scatter(first.real, first.imag, s=3, alpha=0.3, color="gray",
                   label=f"step {steps[0]}")
    ax.scatter(last.real, last.imag, s=3, alpha=0.6, color="C0", label=f"step {steps[-1]}")
    if ref.get("radius"):
        theta = np.linspace(0, 2 * np.pi, 400)
        r = float(ref["radius"])
        ax.plot(r * np.cos(theta), r * np.sin(theta), color="red", lw=1, label="theory bulk")
    outliers = np.asarray(ref.get("outliers", []), dtype=np.complex128).reshape(-1)
    if outliers.size:
        ax.scatter(outliers.real, outliers.imag, marker="x", s=40, color="red",
                   label="theory outliers")
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.legend(fontsize=7, loc="upper right")
