"""Random-matrix reference values: Marchenko–Pastur edges, circular-law radius, outlier counts.

Aspect-ratio convention: X is an n×m matrix with iid entries of mean 0 and variance σ²; the
reference spectrum is that of XᵀX/n (m×m), with q = m/n. Its non-zero eigenvalues fill
[σ²(1−√q)², σ²(1+√q)²] as n, m → ∞ (plus m − n exact zeros when q > 1).
"""

from __future__ import annotations

import math

import torch

from .validate import check_choice, check_vector


def mp_edge(n: int, m: int, sigma2: float = 1.0, which: str = "upper") -> float:
    """Marchenko–Pastur edge σ²(1 ± √(m/n))² of XᵀX/n for X of shape (n, m) (``which``: upper/lower)."""
    check_choice(which, ("upper", "lower"), "which")
    if n <= 0 or m <= 0:
        raise ValueError(f"mp_edge needs positive n, m; got n={n}, m={m}")
    if not math.isfinite(sigma2) or sigma2 < 0:
        raise ValueError(f"mp_edge needs a finite sigma2 >= 0, got {sigma2}")
    r = math.sqrt(m / n)
    return float(sigma2 * (1.0 + r) ** 2 if which == "upper" else sigma2 * (1.0 - r) ** 2)


def mp_edges(n: int, m: int, sigma2: float = 1.0) -> tuple[float, float]:
    """(lower, upper) Marchenko–Pastur edges σ²(1 ∓ √(m/n))² of XᵀX/n, X of shape (n, m)."""
    return mp_edge(n, m, sigma2, "lower"), mp_edge(n, m, sigma2, "upper")


def mp_density(x: torch.Tensor, q: float, sigma2: float = 1.0) -> torch.Tensor:
    """MP bulk density ρ(x) = √((λ₊−x)(x−λ₋)) / (2π σ² q x) on x (without the atom at 0 when q>1)."""
    lo, hi = sigma2 * (1 - math.sqrt(q)) ** 2, sigma2 * (1 + math.sqrt(q)) ** 2
    x = torch.as_tensor(x, dtype=torch.float64)
    inside = (x > lo) & (x < hi)
    val = torch.sqrt(torch.clamp((hi - x) * (x - lo), min=0.0)) / (2 * math.pi * sigma2 * q * x)
    return torch.where(inside, val, torch.zeros_like(val))


def circular_law_radius(n: int, var: float = 1.0) -> float:
    """Circular-law spectral radius √(n·var) of an n×n matrix with iid entries of variance var."""
    if n <= 0 or not math.isfinite(var) or var < 0:
        raise ValueError(
            f"circular_law_radius needs n > 0 and finite var >= 0; got n={n}, var={var}"
        )
    return math.sqrt(n * var)


def count_outliers(evals: torch.Tensor, edge: float, name: str = "evals") -> int:
    """Number of eigenvalues beyond ``edge``: λ > edge for real, |λ| > edge for complex input."""
    ev = check_vector(evals, name)
    mag = ev.abs() if ev.is_complex() else ev
    return int((mag > edge).sum())


def mp_bulk_fits(
    evals: torch.Tensor, n: int | list[int], m: int, max_iter: int = 50
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`mp_bulk_fit` of every row of a (B, p) batch of ascending float64 spectra at once
    (no input checks: the caller has them); ``n`` is one int or a list of B, one per row.
    Returns tensors (sigma2, upper_edge, num_spikes)."""
    B, p = evals.shape
    missing_zeros = max(m - p, 0)  # only the min(n, m) non-zero eigenvalues given: zeros count
    ns = n if isinstance(n, list) else [n] * B
    scale = torch.tensor([mp_edge(k, m, 1.0) for k in ns], dtype=evals.dtype,
                         device=evals.device)[:, None]  # edge = σ²(1 + √(m/n))², row by row
    csum = torch.cumsum(evals, 1)
    k = torch.full((B, 1), p, dtype=torch.long, device=evals.device)  # bulk = the smallest k
    active = torch.ones(B, 1, dtype=torch.bool, device=evals.device)
    sigma2 = torch.zeros(B, 1, dtype=evals.dtype, device=evals.device)
    edge = torch.zeros_like(sigma2)
    for _ in range(max_iter):
        s2 = csum.gather(1, k - 1) / (k + missing_zeros)
        sigma2 = torch.where(active, s2, sigma2)
        edge = torch.where(active, s2 * scale, edge)
        new_k = (evals <= edge).sum(1, keepdim=True)
        active = active & (new_k != k) & (new_k != 0)
        if not bool(active.any()):
            break
        k = torch.where(active, new_k, k)
    spikes = p - (evals <= edge).sum(1)
    return sigma2[:, 0], edge[:, 0], spikes


def mp_bulk_fit(
    evals: torch.Tensor, n: int, m: int, max_iter: int = 50, name: str = "evals"
) -> tuple[float, float, int]:
    """Fit the MP bulk to the eigenvalues of XᵀX/n (X of shape (n, m)) and count spikes above it.

    σ² is estimated from the bulk mean (E λ = σ² for the MP law, counting the zeros when m > n:
    σ² = Σ_bulk λ / (#bulk + max(m − n, 0) · [zeros not in evals])); eigenvalues above the
    upper edge σ²(1+√(m/n))² are removed and σ² is re-estimated until the set is stable.
    Returns (sigma2, upper_edge, num_spikes).
    """
    ev = check_vector(evals, name).to(torch.float64)
    sigma2, edge, spikes = mp_bulk_fits(torch.sort(ev).values[None], n, m, max_iter)
    return float(sigma2[0]), float(edge[0]), int(spikes[0])
