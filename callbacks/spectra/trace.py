"""Stochastic trace estimators (Hutchinson, Hutch++) and stochastic Lanczos quadrature densities.

Probe vectors are drawn by a generator on ``device`` (default: torch's default device; a given
``generator`` draws on its own device and the probes are moved) and the operator is applied to
them there. SLQ solves its small tridiagonal problems on the host and returns nodes, weights and
the density on ``device``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .lanczos import HOST, _make_generator, resolve_device
from .validate import check_finite

Matvec = Callable[[torch.Tensor], torch.Tensor]


class TraceEstimate(NamedTuple):
    """A stochastic trace estimate."""

    trace: float  # the estimate of tr(A)
    std_error: float  # standard error of the stochastic part (0 when it has one sample or none)
    n_matvecs: int  # operator applications used


def _rademacher(shape: tuple[int, ...], gen: torch.Generator, dtype, device) -> torch.Tensor:
    """Return ±1 entries of ``shape`` drawn on the generator's device, moved to ``device``."""
    r = torch.randint(0, 2, shape, generator=gen, device=gen.device)
    return (2 * r - 1).to(dtype=dtype, device=device)


def _apply(matvec: Matvec, V: torch.Tensor, dim: int, name: str) -> torch.Tensor:
    """A V for the columns of V (dim, p), one matvec per column."""
    cols = []
    for j in range(V.shape[1]):
        w = matvec(V[:, j])
        if not isinstance(w, torch.Tensor) or w.numel() != dim:
            raise ValueError(f"{name}: matvec must return a tensor of {dim} entries")
        cols.append(check_finite(w.detach().reshape(-1).to(V.dtype), f"{name} matvec output"))
    return torch.stack(cols, 1)


def _setup(dim: int, n: int, what: str, generator, seed, device):
    """Return (generator, device): ``generator`` or a seeded one on ``device`` (None: default)."""
    if dim < 1 or n < 1:
        raise ValueError(f"{what} needs dim >= 1 and a positive sample count, got {dim}, {n}")
    device = resolve_device(device)
    return _make_generator(generator, seed, device), device


def hutchinson_trace(
    matvec: Matvec,
    dim: int,
    n_samples: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    name: str = "operator",
) -> TraceEstimate:
    """Hutchinson estimate tr(A) ≈ (1/s) Σ_i z_iᵀ A z_i with s Rademacher probes z_i (unbiased)."""
    gen, device = _setup(dim, n_samples, "hutchinson_trace", generator, seed, device)
    Z = _rademacher((dim, n_samples), gen, dtype, device)
    vals = (Z * _apply(matvec, Z, dim, name)).sum(0)
    se = float(vals.std() / math.sqrt(n_samples)) if n_samples > 1 else 0.0
    return TraceEstimate(float(vals.mean()), se, n_samples)


def hutchpp_trace(
    matvec: Matvec,
    dim: int,
    n_matvecs: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    name: str = "operator",
) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021): tr(A) ≈ tr(QᵀAQ) + (1/g) Σ_i z_iᵀ (I−QQᵀ)A(I−QQᵀ) z_i.

    Q = orth(A S) for s = ⌈m/3⌉ Rademacher columns S, then g = m − 2s Rademacher probes z_i;
    m = ``n_matvecs`` ≥ 3 operator applications in all. Unbiased; the variance falls like 1/m²
    for matrices with decaying spectra.
    """
    if n_matvecs < 3:
        raise ValueError(f"hutchpp_trace needs n_matvecs >= 3, got {n_matvecs}")
    gen, device = _setup(dim, n_matvecs, "hutchpp_trace", generator, seed, device)
    s = min(math.ceil(n_matvecs / 3), dim)
    g = n_matvecs - 2 * s
    if g < 1:
        s, g = (n_matvecs - 1) // 2, n_matvecs - 2 * ((n_matvecs - 1) // 2)
    S = _rademacher((dim, s), gen, dtype, device)
    Q, _ = torch.linalg.qr(_apply(matvec, S, dim, name))
    t_low = float(torch.trace(Q.T @ _apply(matvec, Q, dim, name)))
    G = _rademacher((dim, g), gen, dtype, device)
    G = G - Q @ (Q.T @ G)
    AG = _apply(matvec, G, dim, name)
    vals = (G * AG).sum(0)  # (I−QQᵀ) is applied on both sides through G
    se = float(vals.std() / math.sqrt(g)) if g > 1 else 0.0
    return TraceEstimate(t_low + float(vals.mean()), se, 2 * s + g)


class SLQResult(NamedTuple):
    """Gauss quadrature nodes and weights of stochastic Lanczos quadrature."""

    nodes: torch.Tensor  # (n_probes, m) Ritz values θ_j per probe
    weights: torch.Tensor  # (n_probes, m) weights τ_j = (first component of s_j)², sum 1 per probe
    n_matvecs: int


def slq_quadrature(
    matvec: Matvec,
    dim: int,
    n_probes: int,
    n_steps: int,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    name: str = "operator",
) -> SLQResult:
    """Per probe z (Rademacher, ‖z‖ = 1): m = n_steps Lanczos steps give T = S diag(θ) Sᵀ and
    zᵀ f(A) z ≈ Σ_j τ_j f(θ_j), τ_j = S_{1j}². So (1/dim) tr f(A) ≈ mean over probes."""
    gen, device = _setup(dim, n_probes, "slq_quadrature", generator, seed, device)
    m = max(1, min(int(n_steps), dim))
    # the tridiagonal problems are solved on the host (their entries are Python numbers anyway)
    nodes = torch.zeros(n_probes, m, dtype=torch.float64, device=HOST)
    weights = torch.zeros(n_probes, m, dtype=torch.float64, device=HOST)
    n_mv = 0
    for p in range(n_probes):
        z = _rademacher((dim,), gen, dtype, device)
        Q = torch.zeros(m, dim, dtype=dtype, device=device)
        Q[0] = z / math.sqrt(dim)
        al = torch.zeros(m, dtype=torch.float64, device=HOST)
        be = torch.zeros(max(m - 1, 0), dtype=torch.float64, device=HOST)
        steps = m
        for j in range(m):
            w = matvec(Q[j])
            n_mv += 1
            if not isinstance(w, torch.Tensor) or w.numel() != dim:
                raise ValueError(f"{name}: matvec must return a tensor of {dim} entries")
            w = check_finite(w.detach().reshape(-1).to(dtype), f"{name} matvec output")
            al[j] = float(torch.dot(Q[j], w))
            B = Q[: j + 1]
            w = w - B.T @ (B @ w)
            w = w - B.T @ (B @ w)
            b = float(torch.linalg.vector_norm(w))
            if j + 1 < m:
                if b <= 1e-12 * max(float(al[: j + 1].abs().max()), 1e-300):
                    steps = j + 1  # invariant subspace: quadrature is exact with j+1 nodes
                    break
                be[j] = b
                Q[j + 1] = w / b
        T = torch.diag(al[:steps])
        if steps > 1:
            T = T + torch.diag(be[: steps - 1], 1) + torch.diag(be[: steps - 1], -1)
        th, S = torch.linalg.eigh(T)
        nodes[p, :steps] = th
        weights[p, :steps] = S[0].square()
        if steps < m:
            nodes[p, steps:] = th[-1]  # zero-weight padding
    return SLQResult(nodes.to(device), weights.to(device), n_mv)


def slq_density(
    matvec: Matvec,
    dim: int,
    n_probes: int = 8,
    n_steps: int = 64,
    grid: torch.Tensor | None = None,
    sigma: float | None = None,
    n_grid: int = 1024,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    name: str = "operator",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Spectral density of A by stochastic Lanczos quadrature with Gaussian smoothing.

    ρ(x) = (1/n_probes) Σ_p Σ_j τ_pj · N(x; θ_pj, σ²) on ``grid`` (default: n_grid points over
    [min θ − 5σ, max θ + 5σ]); σ defaults to 1% of the Ritz-value range. Returns (grid, density),
    float64; ∫ρ dx ≈ 1 when the grid covers the spectrum.
    """
    res = slq_quadrature(matvec, dim, n_probes, n_steps, dtype, device, generator, seed, name)
    lo, hi = float(res.nodes.min()), float(res.nodes.max())
    if sigma is None:
        sigma = 0.01 * max(hi - lo, 1e-12 * max(abs(hi), 1.0))
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    if grid is None:
        grid = torch.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid, dtype=torch.float64,
                              device=res.nodes.device)
    else:
        grid = torch.as_tensor(grid, dtype=torch.float64, device=res.nodes.device)
        grid = check_finite(grid.reshape(-1), "grid")
    diff = grid[:, None, None] - res.nodes[None]
    kern = torch.exp(-0.5 * (diff / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    density = (kern * res.weights[None]).sum((1, 2)) / res.nodes.shape[0]
    return grid, density
