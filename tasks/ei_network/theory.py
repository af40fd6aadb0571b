"""Spectral theory of the spatial E/I connectivity: outliers, bulk radius, predicted regime.

Outliers: for each integer wave vector n (k = 2π|n|) the mean kernel acts on the Fourier mode
as M(k) = [[ḡ_EE e^{−k²d_EE²/2}, ḡ_EI e^{−k²d_EI²/2}], [ḡ_IE e^{−k²d_IE²/2}, ḡ_II e^{−k²d_II²/2}]],
eigenvalues λ±(k) = ½(a + d ± √((a − d)² + 4bc)). Bulk: R² = λ_max(S),
S_ab = K_ab[(1 − K_ab/c_ab)·J̄_ab² + σ_ab²], J̄ = ḡ/K, σ = g/√K, c_ab = N_b/∫G² (= 2√π d N_b
in 1D, 4π d² N_b in 2D for d ≪ 1).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch

from tasks.ei_network.connectivity import in_degree
from tasks.ei_network.lattice import kernel_overlap


@dataclass
class Theory:
    """Theory of one parameter set: every λ±(n), the bulk radius and the predicted regime."""

    lambdas: np.ndarray        # complex, (2·#vectors,)
    wave_vectors: np.ndarray   # int, (2·#vectors, dim)
    radius: float
    regime: str
    lambda_star: complex       # the outlier with the largest real part (or the top λ overall)
    k_star: np.ndarray         # its wave vector
    complex_star: bool         # λ* has a non-zero imaginary part (negative discriminant)

    @property
    def outlier_mask(self) -> np.ndarray:
        """Return the mask of λ±(n) outside the bulk (|λ| > R)."""
        return np.abs(self.lambdas) > self.radius

    @property
    def outliers(self) -> np.ndarray:
        """Return the predicted outliers (complex)."""
        return self.lambdas[self.outlier_mask]

    @property
    def frequency(self) -> float:
        """Return |Im λ*|/2π, the predicted oscillation frequency in units of 1/τ."""
        return abs(self.lambda_star.imag) / (2 * math.pi) if self.complex_star else 0.0

    @property
    def wavenumber(self) -> float:
        """Return |n*|, the norm of λ*'s integer wave vector."""
        return float(np.linalg.norm(self.k_star))


def mode_matrix(k: np.ndarray, gbar: dict[str, float], ranges: dict[str, float]) -> np.ndarray:
    """Return M(k) of shape (len(k), 2, 2), row = postsynaptic population (E, I)."""
    def entry(blk: str) -> np.ndarray:
        return gbar[blk] * np.exp(-(k**2) * ranges[blk] ** 2 / 2)
    return np.stack([np.stack([entry("ee"), entry("ei")], -1),
                     np.stack([entry("ie"), entry("ii")], -1)], -2)


def mode_eigenvalues(k: np.ndarray, gbar: dict[str, float],
                     ranges: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (λ+, λ−, complex?) of M(k) for each k: ½(a + d ± √((a − d)² + 4bc))."""
    m = mode_matrix(np.asarray(k, dtype=float), gbar, ranges)
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    disc = (a - d) ** 2 + 4 * b * c
    root = np.sqrt(disc.astype(complex))
    return 0.5 * (a + d + root), 0.5 * (a + d - root), disc < 0


def wave_vectors(n_max: int, dim: int) -> np.ndarray:
    """Return every integer wave vector in [−n_max, n_max]^dim, shape (#, dim)."""
    rng = range(-n_max, n_max + 1)
    return np.array(list(itertools.product(rng, repeat=dim)), dtype=int)


def bulk_variance_matrix(gbar: dict[str, float], ranges: dict[str, float], g_het: float,
                         density: float, n_pop: dict[str, int], dim: int,
                         wrapped: bool = True) -> np.ndarray:
    """Return S (2×2, row = post) with S_ab = K_ab[(1 − K_ab/c_ab)·(ḡ/K)² + g²/K]."""
    s = np.zeros((2, 2))
    for blk in ("ee", "ie", "ei", "ii"):
        post, pre = "ei".index(blk[0]), "ei".index(blk[1])
        n_pre = n_pop[blk[1]]
        k = in_degree(density, ranges[blk], n_pre, dim)
        c = n_pre / kernel_overlap(ranges[blk], dim, wrapped=wrapped)
        s[post, pre] = k * ((1 - k / c) * (gbar[blk] / k) ** 2 + g_het**2 / k)
    return s


def bulk_radius(gbar: dict[str, float], ranges: dict[str, float], g_het: float, density: float,
                n_pop: dict[str, int], dim: int, wrapped: bool = True) -> float:
    """Return R = √(λ_max(S)), the radius of the bulk disk."""
    s = bulk_variance_matrix(gbar, ranges, g_het, density, n_pop, dim, wrapped)
    return float(math.sqrt(max(np.linalg.eigvals(s).real.max(), 0.0)))


def classify_theory(lambdas: np.ndarray, vectors: np.ndarray, is_complex: np.ndarray,
                    radius: float) -> tuple[str, int]:
    """Return (regime, index of λ*) from the spec's rule (the leak puts the line at Re λ = 1).

    R ≥ 1 → chaos; else λ* = the outlier with the largest Re λ (ties: smallest |n|):
    Re λ* < 1 → stable; n* = 0 → global_sync / global_osc (Im λ* = 0 / ≠ 0);
    n* ≠ 0 → bump / wave.
    """
    norms = np.linalg.norm(vectors, axis=1)
    order = np.lexsort((norms, -np.round(lambdas.real, 12)))
    outside = np.abs(lambdas) > radius
    cand = [i for i in order if outside[i]]
    star = int(cand[0]) if cand else int(order[0])
    if radius >= 1:
        return "chaos", star
    if not cand or lambdas[star].real < 1:
        return "stable", star
    if norms[star] == 0:
        return ("global_osc" if is_complex[star] else "global_sync"), star
    return ("wave" if is_complex[star] else "bump"), star


def theory(gbar: dict[str, float], ranges: dict[str, float], g_het: float, density: float,
           n_pop: dict[str, int], dim: int, n_max: int, wrapped: bool = True) -> Theory:
    """Return the Theory (all λ±(n) for n ∈ [−n_max, n_max]^dim, R, regime) of one parameter set."""
    vec = wave_vectors(n_max, dim)
    k = 2 * math.pi * np.linalg.norm(vec, axis=1)
    lp, lm, cplx = mode_eigenvalues(k, gbar, ranges)
    lambdas = np.concatenate([lp, lm])
    vectors = np.concatenate([vec, vec])
    is_complex = np.concatenate([cplx, cplx])
    radius = bulk_radius(gbar, ranges, g_het, density, n_pop, dim, wrapped)
    regime, star = classify_theory(lambdas, vectors, is_complex, radius)
    return Theory(lambdas=lambdas, wave_vectors=vectors, radius=radius, regime=regime,
                  lambda_star=complex(lambdas[star]), k_star=vectors[star],
                  complex_star=bool(is_complex[star]))


def theory_from_config(cfg) -> Theory:
    """Return the Theory of a resolved Config (sizes, ranges × range_scale, n_max ≤ Nyquist)."""
    n_max = min(cfg.n_max_wave, max((cfg.side_inh - 1) // 2, 1))
    return theory(cfg.gbar(), cfg.ranges(), cfg.g_het, cfg.density,
                  {"e": cfg.n_exc, "i": cfg.n_inh}, cfg.dim, n_max)


def outliers_tensor(th: Theory) -> torch.Tensor:
    """Return the predicted outliers as a complex128 tensor."""
    return torch.from_numpy(th.outliers.astype(np.complex128))
