"""Top singular triplets, bulk edges, outlier counts and overlaps, all through callbacks.spectra.

The top-k singular pairs come from Lanczos on WᵀW (`callbacks.spectra.lanczos`, float64); the
full spectrum, when asked for, from `callbacks.spectra.singular_values`.

Bulk edge (`gap_edge`): the bulk of W2 is not Marchenko–Pastur (the update diag(a)·M has rows
scaled by a_j, which widens its top), so the edge is re-estimated as the (m+1)-th singular value,
where m is the last index among the top k/2 whose gap s_m − s_{m+1} exceeds GAP_FACTOR times the
mean spacing of the lower half of the top-k (an Onatski-style gap rule; at a square-root edge the
top bulk gap is about 1.7 such spacings on average). The first-moment MP fit `callbacks.spectra.mp_bulk_fit`
is reported beside it (`mp_fit_edge`); without the full spectrum it is fed the top-k values plus
the rest replaced by their mean (from ‖W‖_F²), which leaves that fit unchanged as long as fewer
than k values lie above its edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from callbacks.spectra import count_outliers, lanczos, mp_bulk_fit, singular_values

# An outlier gap exceeds 8 mean bulk spacings: on 200 null draws (rows of a 400×400 matrix on the
# sphere) the largest of the top-5 gaps had 99th percentile 6.2 and maximum 6.2 spacings.
GAP_FACTOR = 8.0


@dataclass
class TopSpectrum:
    """Top-k singular values (descending), left (N, k) and right (d, k) singular vectors."""

    values: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    frob2: float
    shape: tuple[int, int]
    full: torch.Tensor | None = None  # every singular value, when computed


def top_singular(w: torch.Tensor, k: int, method: str = "lanczos",
                 seed: int = 0) -> TopSpectrum:
    """Return the k largest singular triplets of W (float64); `dense` also keeps all values.

    σ_i² and v_i are the top eigenpairs of WᵀW (Lanczos), u_i = W v_i / σ_i.
    """
    w64 = w.detach().to(torch.float64)
    n_rows, n_cols = w64.shape
    res = lanczos(lambda v: w64.T @ (w64 @ v), n_cols, k=k, which="LA", tol=1e-10,
                  dtype=torch.float64, device=w64.device, seed=seed, return_vectors=True,
                  name="WtW")
    values = res.eigenvalues.clamp(min=0.0).sqrt()
    right = res.eigenvectors
    left = (w64 @ right) / values.clamp(min=1e-300)
    full = singular_values(w64) if method == "dense" else None
    if full is not None:
        values = full[:k].clone()
    return TopSpectrum(values=values, left=left, right=right,
                       frob2=float((w64 * w64).sum()), shape=(n_rows, n_cols), full=full)


def mp_fit_edge(spec: TopSpectrum) -> tuple[float, int]:
    """Return (bulk edge of the singular values, number above it) from `mp_bulk_fit`.

    Eigenvalues of WᵀW/N are fitted by the MP law of X (N, d); the singular edge is √(λ₊N).
    """
    n_rows, n_cols = spec.shape
    p = min(n_rows, n_cols)
    if spec.full is not None:
        evals = spec.full.square() / n_rows
    else:
        top = spec.values.square()
        rest = max(spec.frob2 - float(top.sum()), 0.0) / max(p - top.numel(), 1)
        evals = torch.cat([top, torch.full((p - top.numel(),), rest, dtype=top.dtype)]) / n_rows
    _, edge, _ = mp_bulk_fit(evals, n_rows, n_cols)
    edge_sv = float(edge * n_rows) ** 0.5
    return edge_sv, count_outliers(spec.values, edge_sv)


def gap_edge(values: torch.Tensor, gap_factor: float | None = None) -> tuple[float, int]:
    """Return (bulk edge, outliers m): the edge is s_{m+1} of the descending top-k values.

    m = the largest i ≤ k/2 with s_i − s_{i+1} > GAP_FACTOR · (s_{k/2} − s_k)/(k − k/2), else 0.
    """
    factor = GAP_FACTOR if gap_factor is None else gap_factor
    s = values.to(torch.float64)
    k = s.numel()
    if k < 4:
        raise ValueError(f"gap_edge needs at least 4 top singular values, got {k}")
    half = k // 2
    spacing = float(s[half - 1] - s[k - 1]) / (k - half)
    gaps = s[:half] - s[1:half + 1]
    above = torch.nonzero(gaps > factor * spacing).flatten()
    m = int(above[-1]) + 1 if above.numel() else 0
    edge = float(s[m])
    return edge, count_outliers(s, edge)


def overlaps(vectors: torch.Tensor, direction: torch.Tensor) -> list[float]:
    """Return |⟨v_k, u⟩| / ‖u‖ for each column v_k (unit) of `vectors`."""
    u = direction.to(vectors.dtype)
    return (vectors.T @ (u / u.norm())).abs().tolist()


def hadamard_power_overlaps(left: torch.Tensor, a: torch.Tensor) -> list[float]:
    """Return |⟨u_k, a^{∘(k+1)}⟩| / ‖a^{∘(k+1)}‖ for column k of `left` (k = 0, 1, ...)."""
    a64 = a.to(left.dtype)
    out = []
    for k in range(left.shape[1]):
        power = a64 ** (k + 1)
        out.append(float((left[:, k] @ power).abs() / power.norm()))
    return out
