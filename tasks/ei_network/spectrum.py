"""Empirical spectrum of J: dense or sparse eigenvalues, bulk radius, outlier matching.

The eigenvalues are cached by the task's one cache (`tasks.base.data.cached_tensors`, through
the data module: see `EINetworkModule.empirical_spectrum`), stored as real views
(`pack_eigenvalues`) because safetensors has no complex dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from callbacks.spectra import count_outliers, eigvals_general

BULK_QUANTILE = 0.99


def dense_eigenvalues(j: torch.Tensor) -> torch.Tensor:
    """Return all eigenvalues of J (complex128, unordered) by dense float64 eig."""
    return eigvals_general(j.to(torch.float64), precision="float64", name="J")


def sparse_eigenvalues(j: torch.Tensor, k: int, subset: int, n_exc: int,
                       seed: int) -> tuple[torch.Tensor, float]:
    """Return (top-k eigenvalues by modulus via ARPACK, bulk radius from a random subset).

    The bulk radius is the 99th percentile of |λ| of a random principal submatrix of m units
    (E and I in proportion), rescaled by √(N/m): row variance sums scale with m/N.
    """
    import scipy.sparse as sp
    import scipy.sparse.linalg as spla

    n = j.shape[0]
    mat = sp.csr_matrix(j.to(torch.float64).numpy())
    k = int(min(max(k, 1), n - 2))
    top = spla.eigs(mat, k=k, which="LM", return_eigenvectors=False, tol=1e-8)
    gen = torch.Generator().manual_seed(int(seed))
    m = min(subset, n)
    m_e = int(round(m * n_exc / n))
    idx = torch.cat([torch.randperm(n_exc, generator=gen)[:m_e],
                     n_exc + torch.randperm(n - n_exc, generator=gen)[:m - m_e]])
    sub = j[idx][:, idx].to(torch.float64)
    radius = float(torch.quantile(dense_eigenvalues(sub).abs(), BULK_QUANTILE)) * math.sqrt(n / m)
    return torch.from_numpy(np.asarray(top, dtype=np.complex128)), radius


def match_outliers(predicted: np.ndarray, empirical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices into `empirical`, distances) of the optimal one-to-one assignment
    minimising Σ|λ_pred − λ_emp| (Hungarian), one per predicted outlier."""
    if predicted.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0)
    cost = np.abs(predicted[:, None] - empirical[None, :])
    rows, cols = linear_sum_assignment(cost)
    order = np.argsort(rows)
    cols = cols[order]
    return cols, cost[rows[order], cols]


def bulk_radius_empirical(evals: np.ndarray, exclude: np.ndarray) -> float:
    """Return the 99th percentile of |λ| after removing the matched outliers."""
    keep = np.ones(evals.size, dtype=bool)
    keep[exclude] = False
    return float(np.quantile(np.abs(evals[keep]), BULK_QUANTILE))


def pack_eigenvalues(evals: torch.Tensor) -> torch.Tensor:
    """Return the complex eigenvalues as a real (n, 2) float64 tensor [Re, Im] (bit-exact)."""
    return torch.view_as_real(evals.to(torch.complex128)).contiguous()


def unpack_eigenvalues(packed: torch.Tensor) -> torch.Tensor:
    """Return the complex128 eigenvalues of a `pack_eigenvalues` tensor."""
    return torch.view_as_complex(packed.to(torch.float64).contiguous())


def relative_error(value: float, reference: float) -> float:
    """Return |value − reference|/|reference|; NaN when the reference is 0 or not finite (the
    relative error is undefined there, and `compare` says why)."""
    if reference == 0 or not math.isfinite(reference):
        return math.nan
    return abs(value - reference) / abs(reference)


def compare(evals: np.ndarray, predicted: np.ndarray, radius_theory: float,
            lambda_star: complex, bulk_radius: float | None = None) -> dict:
    """Return the theory-vs-empirical spectrum metrics.

    Matches every predicted outlier to its own eigenvalue, then reports the empirical bulk radius
    (99th percentile of the rest, unless `bulk_radius` is given), its relative error
    |R_emp − R_th|/R_th, the worst match distance, the eigenvalue matched to λ* and outlier
    counts beyond the theory radius. A theory radius of 0 (no heterogeneity and no Bernoulli
    variance, e.g. g = 0 and ḡ = 0) leaves the relative error undefined: NaN, with the reason
    in `bulk_radius_rel_error_reason` (None otherwise).
    """
    cols, dist = match_outliers(predicted, evals)
    r_emp = bulk_radius if bulk_radius is not None else bulk_radius_empirical(evals, cols)
    if predicted.size:
        star = int(np.argmin(np.abs(predicted - lambda_star)))
        top_emp = complex(evals[cols[star]])
    else:
        top_emp = complex(evals[np.argmax(evals.real)])
    return {
        "bulk_radius_empirical": r_emp,
        "bulk_radius_rel_error": relative_error(r_emp, radius_theory),
        "bulk_radius_rel_error_reason": (
            None if math.isfinite(radius_theory) and radius_theory > 0 else
            f"the theory bulk radius is {radius_theory:g}: |R_emp − R_th|/R_th is undefined"),
        "top_outlier_empirical": top_emp,
        "top_outlier_distance": abs(top_emp - lambda_star),
        "outlier_max_distance": float(dist.max()) if dist.size else 0.0,
        "outlier_mean_distance": float(dist.mean()) if dist.size else 0.0,
        "n_outliers_theory": int(predicted.size),
        "n_outliers_empirical": count_outliers(torch.from_numpy(evals), radius_theory),
    }
