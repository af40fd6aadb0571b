"""Empirical spectrum of J: dense or sparse eigenvalues, bulk radius, outlier matching, cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from callbacks.spectra import count_outliers, eigvals_general
from tasks.base.data import config_hash

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


def cached_eigenvalues(cache_dir: Path, key: dict, compute) -> tuple[torch.Tensor, bool]:
    """Return (eigenvalues, loaded?) from `<cache_dir>/eigvals_<hash>.pt`, computing once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"eigvals_{config_hash(key)}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)["eigvals"], True
    evals = compute()
    tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}")
    torch.save({"eigvals": evals, "key": key}, tmp)
    tmp.rename(path)
    return evals, False


def compare(evals: np.ndarray, predicted: np.ndarray, radius_theory: float,
            lambda_star: complex, bulk_radius: float | None = None) -> dict:
    """Return the theory-vs-empirical spectrum metrics.

    Matches every predicted outlier to its own eigenvalue, then reports the empirical bulk radius
    (99th percentile of the rest, unless `bulk_radius` is given), the worst match distance, the
    eigenvalue matched to λ* and outlier counts beyond the theory radius.
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
        "bulk_radius_rel_error": abs(r_emp - radius_theory) / radius_theory,
        "top_outlier_empirical": top_emp,
        "top_outlier_distance": abs(top_emp - lambda_star),
        "outlier_max_distance": float(dist.max()) if dist.size else 0.0,
        "outlier_mean_distance": float(dist.mean()) if dist.size else 0.0,
        "n_outliers_theory": int(predicted.size),
        "n_outliers_empirical": count_outliers(torch.from_numpy(evals), radius_theory),
    }
