"""Scalar summaries of a spectrum: effective rank, participation ratio, stable rank, decay, ..."""

from __future__ import annotations

import math

import torch

from .validate import check_vector


def _real_evals(evals: torch.Tensor, name: str) -> torch.Tensor:
    ev = check_vector(evals, name)
    if ev.is_complex():
        raise ValueError(f"{name}: expected a real spectrum, got complex values")
    return ev.to(torch.float64)


def _clamp_nonneg(ev: torch.Tensor, name: str, rtol: float = 1e-6) -> torch.Tensor:
    """Clamp tiny negative round-off (|λ| ≤ rtol·max|λ|) to 0; raise on genuinely negative ones."""
    scale = float(ev.abs().max())
    if float(ev.min()) < -rtol * max(scale, 1e-300):
        raise ValueError(
            f"{name}: expected a non-negative spectrum (PSD matrix), min eigenvalue {float(ev.min()):.3g}"
        )
    return ev.clamp(min=0.0)


def effective_rank(evals: torch.Tensor, name: str = "evals") -> float:
    """RankMe effective rank exp(−Σ p_i log p_i), p_i = λ_i / Σλ (tiny negatives clamped to 0)."""
    ev = _clamp_nonneg(_real_evals(evals, name), name)
    total = float(ev.sum())
    if total <= 0:
        return 0.0
    p = ev / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def participation_ratio(evals: torch.Tensor, name: str = "evals") -> float:
    """Participation ratio (Σλ)² / Σλ² (0 for an all-zero spectrum)."""
    ev = _real_evals(evals, name)
    den = float(ev.square().sum())
    return float(ev.sum()) ** 2 / den if den > 0 else 0.0


def stable_rank(evals: torch.Tensor, name: str = "evals") -> float:
    """Stable rank Σλ / λ_max of a PSD spectrum (for λ = σ², that is ‖W‖_F² / ‖W‖_2²)."""
    ev = _clamp_nonneg(_real_evals(evals, name), name)
    top = float(ev.max())
    return float(ev.sum()) / top if top > 0 else 0.0


def condition_number(evals: torch.Tensor, name: str = "evals") -> float:
    """Condition number max|λ| / min|λ| in float64 (inf when the smallest |λ| is 0)."""
    ev = _real_evals(evals, name).abs()
    lo, hi = float(ev.min()), float(ev.max())
    if hi == 0:
        return float("nan")
    return hi / lo if lo > 0 else float("inf")


def spectral_entropy(evals: torch.Tensor, name: str = "evals") -> float:
    """Shannon entropy −Σ p_i log p_i of p_i = λ_i / Σλ (natural log; log of effective_rank)."""
    er = effective_rank(evals, name)
    return math.log(er) if er > 0 else 0.0


def topk(evals: torch.Tensor, k: int, largest: bool = True, name: str = "evals") -> torch.Tensor:
    """The k largest (descending) or smallest (ascending) eigenvalues; k is clipped to the size."""
    ev = _real_evals(evals, name)
    k = min(int(k), ev.numel())
    return torch.topk(ev, k, largest=largest, sorted=True).values


def alpha_req(
    evals: torch.Tensor, k_min: int = 1, k_max: int | None = None, name: str = "evals"
) -> float:
    """Power-law decay exponent α of a spectrum sorted descending, λ_k ∝ k^(−α).

    α = −slope of the ordinary least-squares fit of log λ_k on log k over ranks
    k_min ≤ k ≤ k_max (1-based; k_max=None means the last positive eigenvalue).
    """
    ev = torch.sort(_real_evals(evals, name), descending=True).values
    ev = ev[ev > 0]
    if k_max is None:
        k_max = ev.numel()
    k_max = min(int(k_max), ev.numel())
    if k_min < 1 or k_max - k_min + 1 < 2:
        raise ValueError(
            f"{name}: alpha_req needs at least 2 positive eigenvalues in ranks [{k_min}, {k_max}]"
        )
    k = torch.arange(k_min, k_max + 1, dtype=torch.float64, device=ev.device)
    x, y = k.log(), ev[k_min - 1 : k_max].log()
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc * yc).sum() / xc.square().sum())
    return -slope


def spectrum_summary(evals: torch.Tensor, name: str = "evals") -> dict[str, float]:
    """Loggable scalars of a real spectrum: top1, trace, condition_number, stable_rank,
    effective_rank, participation_ratio (all float64 → Python floats).

    stable_rank and effective_rank assume a PSD spectrum; for indefinite spectra (a Hessian)
    they are computed on |λ|.
    """
    ev = _real_evals(evals, name)
    ab = ev.abs() if float(ev.min()) < 0 else ev
    return {
        "top1": float(ev.max()),
        "min": float(ev.min()),
        "trace": float(ev.sum()),
        "condition_number": condition_number(ev, name),
        "stable_rank": stable_rank(ab, name),
        "effective_rank": effective_rank(ab, name),
        "participation_ratio": participation_ratio(ev, name),
        "n": float(ev.numel()),
    }
