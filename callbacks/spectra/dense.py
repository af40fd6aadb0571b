"""Dense spectra: symmetric eigenvalues, singular values, general (complex) eigenvalues.

Precision policy (``precision=``): ``"auto"`` computes and returns float64 (complex128), because
the small end of a spectrum (rank, entropy, log-det, condition number) is lost in float32;
``"float32"`` / ``"float64"`` force that precision. All functions batch over leading dims.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .validate import check_matrix, compute_dtype


def eigvals_sym(A: torch.Tensor, precision: str = "auto", name: str = "matrix") -> torch.Tensor:
    """Eigenvalues of the symmetric part (A + Aᵀ)/2, real, ascending, shape (..., n)."""
    A = check_matrix(A, name, square=True)
    dt = compute_dtype(A, precision)
    A = A.to(dt)
    A = 0.5 * (A + A.transpose(-1, -2).conj())
    return torch.linalg.eigvalsh(A)


def singular_values(W: torch.Tensor, precision: str = "auto", name: str = "matrix") -> torch.Tensor:
    """Singular values σ_i of W (..., m, n), descending, shape (..., min(m, n))."""
    W = check_matrix(W, name)
    dt = compute_dtype(W, precision)
    return torch.linalg.svdvals(W.to(dt))


def eigvals_general(A: torch.Tensor, precision: str = "auto", name: str = "matrix") -> torch.Tensor:
    """Complex eigenvalues λ of a general square A (..., n, n), in LAPACK order, shape (..., n)."""
    A = check_matrix(A, name, square=True)
    dt = compute_dtype(A, precision)
    return torch.linalg.eigvals(A.to(dt))


def gram_eigvals(
    W: torch.Tensor, normalize: float | None = None, precision: str = "auto", name: str = "matrix"
) -> torch.Tensor:
    """Eigenvalues of the smaller Gram matrix of W, i.e. σ_i² / normalize, ascending, (..., min(m,n)).

    Computed from singular values (σ_i²) so that the small end is not squared away in the Gram.
    ``normalize=None`` means no division.
    """
    s = singular_values(W, precision=precision, name=name)
    ev = s.square().flip(-1)
    if normalize is not None:
        ev = ev / normalize
    return ev


def gram_eigvalsh(
    X: torch.Tensor | Sequence[torch.Tensor], dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Ascending eigenvalues of the smaller Gram of each (a, b) matrix W of a (B, a, b) stack or
    a list of same-shape matrices — W Wᴴ when a < b, else Wᵀ W̄ (WᴴW's conjugate, the same
    eigenvalues) —, shape (B, min(a, b)), computed in ``dtype`` (default: the matrices').

    The Grams are written into one buffer (a list is never stacked into a copy) and solved by
    one batched ``torch.linalg.eigvalsh`` (LAPACK syevd without vectors on CPU). The library
    stays pure torch; on this project's 2-core AMD EPYC, scipy's OpenBLAS ``syevd`` measured ~2x
    faster than torch's MKL one for M = 512 (18 vs 36 ms in float64, one thread).
    """
    first = X[0]
    dt = first.dtype if dtype is None else dtype
    a, b = first.shape
    m = min(a, b)
    G = torch.empty(len(X), m, m, dtype=dt, device=first.device)
    for g, w in zip(G, X, strict=True):
        x = w.to(dt)
        x = x if a < b else x.T  # (m, max(a, b)): x xᴴ is the smaller Gram
        torch.matmul(x, x.T.conj(), out=g)
    return torch.linalg.eigvalsh(G)


def symmetric_gram(G: torch.Tensor, block: int = 128) -> torch.Tensor:
    """Return G Gᵀ, computing only the blocks on and above the diagonal (about half the work of
    one matmul for many rows) and mirroring the rest."""
    rows = G.shape[0]
    if rows <= 2 * block:
        return G @ G.T
    out = torch.empty(rows, rows, dtype=G.dtype, device=G.device)
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        upper = G[start:stop] @ G[start:].T  # (b, rows - start)
        out[start:stop, start:] = upper
        out[stop:, start:stop] = upper[:, stop - start:].T
    return out
