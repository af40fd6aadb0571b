"""B1: per-layer weight metrics vs WeightWatcher (``WeightWatcher(model=model).analyze()``).

Models: a 6-layer 512x512 MLP and a randomly initialised GPT-2 (n_layer=4, n_embd=256, n_head=4,
no downloads), each with its default (random) init and with heavy-tailed Student-t (df=3)
weights. Both sides analyse the same layer set (WeightWatcher's defaults: Linear / Conv1D /
Embedding layers with 8 <= M <= 15000 and N <= 50000). Targets: >= 3x faster on random init,
>= 10x on heavy-tailed, |Δalpha| <= 5e-3 on layers WeightWatcher fits well (its D < 0.1), and
<= 1.25x the floor (per layer one float32 Gram of the short side + eigvalsh, timed in the same
run).
Prints PASS/FAIL per target; exits 0 unless something crashes. ``--device cuda`` runs ours on
the GPU (WeightWatcher analyses a CPU copy of the same weights); ``--reps`` sets the repetitions.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings

from _common import bar, header, parse_args, timeit  # first: pins every library to one thread

# isort: split
import torch
from torch import nn

from callbacks.spectra import model_weight_metrics
from callbacks.spectra.weights import iter_weight_matrices

REPS = 5


def mlp() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(6):
        layers += [nn.Linear(512, 512), nn.ReLU()]
    return nn.Sequential(*layers)


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=4, n_embd=256, n_head=4)).eval()


def heavy_tailed(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                # Student-t(3) = N / sqrt(chi2_3 / 3), scaled like a 1/sqrt(fan_in) init
                z = torch.randn(p.shape, generator=g)
                chi2 = torch.randn((3, *p.shape), generator=g).square().sum(0)
                p.copy_(z / torch.sqrt(chi2 / 3) / math.sqrt(p.shape[-1]))
    return model


def floor(model: nn.Module) -> list[torch.Tensor]:
    """The bare floor of any Gram-based weight analysis: per layer of the analysed set, one
    float32 Gram of the short side (A Aᵀ with A the weight oriented (M, N), M ≤ N) and
    torch.linalg.eigvalsh of it; no checks, no fits, no batching."""
    out = []
    for _, w in iter_weight_matrices(model):
        a = w.reshape(w.shape[0], -1).float()
        if a.shape[0] > a.shape[1]:
            a = a.T
        out.append(torch.linalg.eigvalsh(a @ a.T))
    return out


def speed_bar(target: float, ratio: float, ww_over_floor: float) -> bool | None:
    """The speed-up target over WeightWatcher, or None (printed as FLOOR) where even the bare
    floor is less than ``target`` times faster than WeightWatcher."""
    if ww_over_floor < target and ratio < target:
        print(f"  [FLOOR] speed >= {target:g}x: {ratio:.2f}x; unreachable: weightwatcher is only "
              f"{ww_over_floor:.2f}x the floor (a {target:g}x speed-up needs ours at "
              f"{ww_over_floor / target:.2f}x the floor)")
        return None
    return bar(f"speed >= {target:g}x", ratio >= target, f"{ratio:.2f}x")


def run_case(label: str, model: nn.Module, speed_target: float, ww,
             device: torch.device = torch.device("cpu"), reps: int = REPS) -> list[bool | None]:
    print(f"\n--- {label} ---")
    ours_model = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    t_ww, details = timeit(lambda: ww.WeightWatcher(model=model).analyze(), reps=reps)
    t_us, ours = timeit(lambda: model_weight_metrics(ours_model), reps=reps)
    t_32, ours32 = timeit(lambda: model_weight_metrics(ours_model, precision="float64"),
                          reps=reps)
    t_floor, _ = timeit(lambda: floor(ours_model), reps=reps)
    print(f"  layers: weightwatcher {len(details)}, ours {len(ours)}")
    print(
        f"  median time: weightwatcher {t_ww:.3f}s | ours (default: float32 eigenvalues, "
        f"float64 fallback) {t_us:.3f}s | ours (precision='float64') {t_32:.3f}s"
    )
    ratio, ratio32 = t_ww / t_us, t_ww / t_32
    print(f"  speed-up: {ratio:.2f}x (default), {ratio32:.2f}x (float64)")
    print(f"  floor (float32 Gram + eigvalsh per layer): {t_floor:.3f}s; ours = "
          f"{t_us / t_floor:.2f}x the floor, weightwatcher = {t_ww / t_floor:.2f}x")
    names = list(ours)
    gaps, gaps32, gaps_all, fitted_well = [], [], [], 0
    other = {"log_norm": 0.0, "log_spectral_norm": 0.0, "stable_rank": 0.0, "entropy": 0.0}
    for i, (_, row) in enumerate(details.iterrows()):
        m, m32 = ours[names[i]], ours32[names[i]]
        d_alpha = abs(m["alpha"] - float(row["alpha"]))
        gaps_all.append(d_alpha)
        for k in other:
            other[k] = max(other[k], abs(m[k] - float(row[k])) / max(abs(float(row[k])), 1e-12))
        if float(row["D"]) < 0.1:
            fitted_well += 1
            gaps.append(d_alpha)
            gaps32.append(abs(m32["alpha"] - float(row["alpha"])))
    same_set = len(details) == len(ours) and all(
        str(r["name"]) == n.split(".")[-1]
        for (_, r), n in zip(details.iterrows(), names, strict=False)
    )
    max_gap = max(gaps) if gaps else float("nan")
    print(
        f"  layers with WW D < 0.1: {fitted_well}/{len(details)}; max |Δalpha| there: "
        f"{max_gap:.2e} (default), {max(gaps32) if gaps32 else float('nan'):.2e} (float64); "
        f"over all layers: {max(gaps_all):.2e}"
    )
    print(
        "  max relative gap of other metrics: "
        + ", ".join(f"{k} {v:.1e}" for k, v in other.items())
    )
    return [
        bar("same layer set", same_set, f"{len(details)} layers"),
        speed_bar(speed_target, ratio, t_ww / t_floor),
        bar("ours <= 1.25x the floor", t_us <= 1.25 * t_floor, f"{t_us / t_floor:.2f}x"),
        bar(
            "|Δalpha| <= 5e-3 where WW D < 0.1",
            max_gap <= 5e-3,
            f"{max_gap:.2e} on {len(gaps)} layers",
        )
        if gaps
        else bar(
            "|Δalpha| <= 5e-3 (no layer has WW D < 0.1: checked on all layers)",
            max(gaps_all) <= 5e-3,
            f"{max(gaps_all):.2e} on {len(gaps_all)} layers",
        ),
    ]


def main() -> None:
    args = parse_args(__doc__)
    header("B1 weight spectra: callbacks.spectra.model_weight_metrics vs weightwatcher",
           args.device)
    opts = {"device": args.device, "reps": args.reps}
    warnings.filterwarnings("ignore")
    try:
        import weightwatcher as ww
    except Exception as err:  # report what broke instead of crashing
        print(f"weightwatcher does not import on this torch: {type(err).__name__}: {err}")
        return
    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    print(f"weightwatcher {getattr(ww, '__version__', '?')}")
    torch.manual_seed(0)
    results = []
    results += run_case("MLP 6x512x512, random init", mlp(), 3.0, ww, **opts)
    results += run_case("MLP 6x512x512, Student-t(3) weights", heavy_tailed(mlp()), 10.0, ww,
                        **opts)
    results += run_case("GPT-2 (4 layers, 256), random init", gpt2(), 3.0, ww, **opts)
    results += run_case(
        "GPT-2 (4 layers, 256), Student-t(3) weights", heavy_tailed(gpt2()), 10.0, ww, **opts
    )
    reachable = [r for r in results if r is not None]
    print(f"\nB1: {sum(reachable)}/{len(reachable)} targets met; "
          f"{len(results) - len(reachable)} speed-up target(s) over weightwatcher below the floor")


if __name__ == "__main__":
    main()
