"""Freeze WeightWatcher's per-layer metrics of a few seeded matrices into a JSON fixture.

    .venv/bin/pip install weightwatcher          # (the `bench` extra; 0.7.7 when this was made)
    .venv/bin/python scripts/make_weightwatcher_fixture.py [--out tests/fixtures/weightwatcher.json]

Each matrix is drawn with numpy's legacy ``RandomState`` (its streams are frozen by numpy's
compatibility policy, so the test regenerates the same matrices without storing them; the
fixture keeps their sum and sum of squares to prove it). The matrices become the float32
weights of Linear / Conv2d layers of one model (WeightWatcher converts torch weights to float32
anyway: ``RMT_Util.torch_T_to_np`` is ``T.float().numpy()``; it then works in float64), analysed by ``WeightWatcher(model=model).analyze()`` with
its defaults (pl_package="ww", min_evals=8, max_evals=15000, pool=True, conv2d_norm=True,
EVALS_THRESH=1e-5). For the layer with fewer than 20 eigenvalues the fixture also keeps the
internals of WeightWatcher's small-sample routine (``WW_powerlaw.WWFit.fit_powerlaw_smallN``)
on WeightWatcher's own ESD: the bias-corrected alpha, KS distance D and objective
J = D − 0.868/√n of every xmin candidate. (``WWFit.__init__`` then re-selects xmin by the
smallest D, so ``analyze()`` reports that candidate, not the one minimising J; see "note".)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "weightwatcher.json"
# name: (layer kind, weight shape (PyTorch layout), distribution, seed, scale)
CASES: dict[str, tuple[str, tuple[int, ...], str, int, float]] = {
    "gaussian_200x150": ("linear", (200, 150), "normal", 0, 0.05),
    "student_t_100x300": ("linear", (100, 300), "t2.5", 1, 0.05),
    "conv_t3_24x16x3x3": ("conv2d", (24, 16, 3, 3), "t3", 2, 0.05),
    "small_n_t_100x16": ("linear", (100, 16), "t2.5", 4, 0.05),
}
WW_KEYS = ("alpha", "xmin", "D", "sigma", "num_pl_spikes", "log_norm", "log_spectral_norm",
           "alpha_weighted", "log_alpha_norm", "stable_rank", "entropy", "lambda_max",
           "num_evals", "N", "M", "rf")


def draw(dist: str, seed: int, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Return the float64 matrix of one case: RandomState(seed) normal or Student-t entries."""
    rs = np.random.RandomState(seed)
    if dist == "normal":
        return rs.standard_normal(shape) * scale
    return rs.standard_t(float(dist[1:]), shape) * scale


def build_model() -> nn.Module:
    """Return a float32 model whose children (named after the cases) hold the case weights."""
    model = nn.Module()
    for name, (kind, shape, dist, seed, scale) in CASES.items():
        if kind == "linear":
            layer = nn.Linear(shape[1], shape[0], bias=False)
        else:
            layer = nn.Conv2d(shape[1], shape[0], shape[2:], bias=False)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(draw(dist, seed, shape, scale)))
        model.add_module(name, layer)
    return model


def finite_or_none(values: np.ndarray) -> list[float | None]:
    """Return a JSON-safe list: floats, None for inf/NaN."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def small_n_internals(watcher: Any, layer_id: int) -> dict[str, Any]:
    """Return WWFit's per-candidate alphas, Ds and Js on WeightWatcher's ESD of one layer."""
    from weightwatcher.WW_powerlaw import WWFit

    esd = np.sort(np.asarray(watcher.get_ESD(layer=layer_id), dtype=np.float64))
    data = esd[esd > 1e-5]
    with contextlib.redirect_stdout(io.StringIO()):  # WWFit prints "SMALL N PL FIT"
        fit = WWFit(data)
    return {"xmins": finite_or_none(data[:-1]), "alphas": finite_or_none(fit.alphas),
            "Ds": finite_or_none(fit.Ds), "Js": finite_or_none(fit.Js),
            "argmin_J": int(np.argmin(fit.Js)), "argmin_D": int(np.argmin(fit.Ds))}


def main() -> None:
    """Analyse the cases with WeightWatcher and write the fixture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import weightwatcher as ww

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model = build_model()
    watcher = ww.WeightWatcher(model=model)
    with contextlib.redirect_stdout(io.StringIO()):
        details = watcher.analyze()
    layers = {}
    for _, row in details.iterrows():
        name = str(row["name"])
        kind, shape, dist, seed, scale = CASES[name]
        W = draw(dist, seed, shape, scale)
        entry = {"kind": kind, "shape": list(shape), "dist": dist, "seed": seed, "scale": scale,
                 "checksum": {"sum": float(W.sum()), "sum_sq": float(np.square(W).sum())},
                 "ww": {k: float(row[k]) for k in WW_KEYS}}
        if int(row["num_evals"]) < 20:
            entry["small_n"] = small_n_internals(watcher, int(row["layer_id"]))
        layers[name] = entry
    fixture = {
        "command": "python scripts/make_weightwatcher_fixture.py",
        "weightwatcher": ww.__version__, "numpy": np.__version__, "torch": torch.__version__,
        "python": platform.python_version(),
        "settings": "WeightWatcher(model=model).analyze() defaults: pl_package='ww', "
                    "min_evals=8, max_evals=15000, pool=True, conv2d_norm=True, "
                    "EVALS_THRESH=1e-5; float32 weights (the float64 draws rounded; WeightWatcher "
                    "casts torch weights to float32 itself), analysed in float64",
        "generator": "numpy.random.RandomState(seed): standard_normal(shape) * scale "
                     "('normal') or standard_t(df, shape) * scale ('t<df>'); PyTorch layout",
        "note": "small_n: WWFit.fit_powerlaw_smallN picks xmin by argmin J = D - 0.868/sqrt(n) "
                "over tails of >= 8 values; WWFit.__init__ then re-picks argmin D, which is "
                "what analyze() reports (weightwatcher 0.7.7). callbacks.spectra.powerlaw "
                "follows the small-sample routine (argmin J).",
        "layers": layers,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.out} ({len(layers)} layers, weightwatcher {ww.__version__})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
