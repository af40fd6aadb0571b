"""Lanczos eigenvalues of a symmetric linear operator given only as v ↦ A v.

(Block) Lanczos with full re-orthogonalisation: the three-term (block) recurrence, then a
classical Gram–Schmidt pass against the whole basis, repeated when it removed most of the
vector (DGKS), so Ritz values do not produce ghost copies. A Ritz pair (θ, y = Q s) is
*converged* when its residual ‖A y − θ y‖ = ‖R s_last‖ (R the coupling to the next block,
s_last the last block of s) is ≤ tol · max(|θ|, 1e-8 · max_j |θ_j|); since the eigenvalue error
is at most the residual (and about residual²/gap), converged values are accurate to ≤ tol
relative. With ``bound="gap"`` a pair also counts as converged when the gap bound
residual²/gap ≤ tol · |θ| holds (gap: the distance from θ to the nearest other Ritz value), the
usual a-posteriori bound on the eigenvalue error of an isolated Ritz value (Parlett, *The
Symmetric Eigenvalue Problem*, §11.7): a tolerance on the eigenvalues rather than on the vectors.
Iteration stops once the k wanted Ritz values are all converged, the Krylov space is
exhausted (basis size = dim: exact), or the basis reaches ``max_iter`` vectors. An invariant
subspace is continued with fresh random vectors orthogonal to the basis. A single start vector
(block_size=1) sees one copy of an exactly repeated eigenvalue (more appear only through
rounding); block_size=p finds multiplicities up to p.

Devices: the Krylov basis, the random start vectors (a generator on ``device``) and the Ritz
vectors live on ``device``; the small projected problem (T, the coupling blocks R, the convergence
flags) is kept on the host on purpose (its entries are read as Python numbers every step, and a
(≤ a few hundred)² ``eigh`` is faster there than a device launch); the results are moved back to
``device``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from .validate import check_choice, check_finite

HOST = torch.device("cpu")  # where the projected (tridiagonal / block) problem is solved
WHICH = ("LA", "SA", "LM")
BOUNDS = ("residual", "gap")


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos`."""

    eigenvalues: (
        torch.Tensor
    )  # (k,) float64; descending for LA/LM (by |λ| for LM), ascending for SA
    converged: torch.Tensor  # (k,) bool, by the residual (or gap) bound
    n_matvecs: int  # number of operator applications
    eigenvectors: torch.Tensor | None = None  # (dim, k) Ritz vectors when asked for


def resolve_device(device: torch.device | str | None) -> torch.device:
    """Return ``device`` as a torch.device (None: torch's current default device)."""
    return torch.get_default_device() if device is None else torch.device(device)


def _make_generator(generator: torch.Generator | None, seed: int | None, device) -> torch.Generator:
    """Return ``generator``, or a new one on ``device`` seeded with ``seed`` (None: 0)."""
    if generator is not None:
        return generator
    g = torch.Generator(device=device)
    g.manual_seed(0 if seed is None else int(seed))
    return g


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the k wanted Ritz values, in output order."""
    if which == "LA":
        return torch.argsort(theta, descending=True)[:k]
    if which == "SA":
        return torch.argsort(theta)[:k]
    return torch.argsort(theta.abs(), descending=True)[:k]


def _ritz_gaps(theta: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
    """Return, for each selected Ritz value, the distance to the nearest other Ritz value."""
    diff = (theta[sel, None] - theta[None, :]).abs()
    diff[torch.arange(sel.numel(), device=theta.device), sel] = float("inf")
    return diff.min(dim=1).values


def _gs_rows(W: torch.Tensor, B: torch.Tensor, thresh: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormalise the rows of W (already orthogonal to B) one by one.

    Returns (Qn, R) with W[i] = Σ_l R[l, i] Qn[l] (R upper triangular, rows of dependent
    vectors dropped: Qn may have fewer rows than W).
    """
    rows: list[torch.Tensor] = []
    R = torch.zeros(W.shape[0], W.shape[0], dtype=torch.float64, device=HOST)
    for i in range(W.shape[0]):
        w = W[i].clone()
        if rows:
            Qn = torch.stack(rows)
            c = Qn @ w
            w = torch.addmv(w, Qn.T, c, alpha=-1.0)
            c2 = Qn @ w
            w = torch.addmv(w, Qn.T, c2, alpha=-1.0)
            R[: len(rows), i] = (c + c2).double().cpu()
        if B.shape[0]:
            w = torch.addmv(w, B.T, B @ w, alpha=-1.0)
        r = float(torch.linalg.vector_norm(w))
        if r > thresh:
            R[len(rows), i] = r
            rows.append(w / r)
    if not rows:
        return W[:0], R[:0]
    return torch.stack(rows), R[: len(rows)]


def _random_rows(
    n: int, B: torch.Tensor, gen: torch.Generator, dim: int, dtype, device
) -> torch.Tensor:
    """Up to n orthonormal random rows orthogonal to the rows of B (fewer if the space ends)."""
    n = min(n, dim - B.shape[0])
    if n <= 0:
        return torch.zeros(0, dim, dtype=dtype, device=device)
    V = torch.randn(n, dim, generator=gen, dtype=dtype, device=gen.device).to(device)
    if B.shape[0]:
        V = V - (V @ B.T) @ B
        V = V - (V @ B.T) @ B
    Qn, _ = _gs_rows(V, B, 1e-6 * math.sqrt(dim))
    return Qn


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    dim: int,
    k: int = 1,
    which: str = "LA",
    tol: float = 1e-6,
    max_iter: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    v0: torch.Tensor | None = None,
    block_size: int = 1,
    return_vectors: bool = False,
    name: str = "operator",
    bound: str = "residual",
) -> LanczosResult:
    """k extreme eigenvalues of the symmetric operator ``matvec`` on R^dim by (block) Lanczos.

    Returns :class:`LanczosResult`: the Ritz values θ_i of T = QᵀAQ (float64) — descending for
    which="LA" (largest algebraic), ascending for "SA" (smallest algebraic), descending |θ| for
    "LM" —, residual-based converged flags ‖A y_i − θ_i y_i‖ ≤ tol·max(|θ_i|, 1e-8‖T‖), and the
    number of matvecs. ``bound="gap"`` also accepts residual²/gap ≤ tol·|θ_i| (an eigenvalue
    tolerance; see the module docstring). ``max_iter`` bounds the basis size (default min(dim, max(20k + 40, 100)),
    times block_size), hence memory dim × max_iter in ``dtype`` (the basis dtype; T is float64).
    ``device`` holds the basis, draws the start vectors and receives the results (default: v0's
    device, else torch's default device); ``matvec`` gets and must return vectors there.
    """
    check_choice(which, WHICH, "which")
    check_choice(bound, BOUNDS, "bound")
    dim, k, p = int(dim), int(k), int(block_size)
    if dim < 1 or k < 1 or k > dim:
        raise ValueError(f"lanczos needs 1 <= k <= dim, got k={k}, dim={dim}")
    if p < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    p = min(p, dim)
    if max_iter is None:
        max_iter = max(20 * k + 40, 100) * p
    m_max = min(dim, max(int(max_iter), k, p))
    if device is None and v0 is not None and isinstance(v0, torch.Tensor):
        device = v0.device
    device = resolve_device(device)
    gen = _make_generator(generator, seed, device)
    Q = torch.empty(m_max + p, dim, dtype=dtype, device=device)
    T = torch.zeros(m_max + p, m_max + p, dtype=torch.float64, device=HOST)
    empty = Q[:0]

    if v0 is not None:
        q = check_finite(torch.as_tensor(v0, dtype=dtype, device=device).reshape(-1), "v0")
        nq = torch.linalg.vector_norm(q)
        if q.numel() != dim or nq == 0:
            raise ValueError(f"v0 must be a non-zero vector of length {dim}")
        first = (q / nq).unsqueeze(0)
        if p > 1:
            first = torch.cat([first, _random_rows(p - 1, first, gen, dim, dtype, device)])
    else:
        first = _random_rows(p, empty, gen, dim, dtype, device)
    Q[: first.shape[0]] = first
    cur = (0, first.shape[0])
    prev: tuple[int, int] | None = None
    n_mv = 0
    m = 0
    scale = 0.0
    theta = s = None
    conv = torch.zeros(0, dtype=torch.bool, device=HOST)
    while True:
        s0, sz = cur
        blk = Q[s0 : s0 + sz]
        outs = []
        for i in range(sz):
            w = matvec(blk[i])
            n_mv += 1
            if not isinstance(w, torch.Tensor) or w.numel() != dim:
                raise ValueError(f"{name}: matvec must return a tensor of {dim} entries")
            outs.append(w.detach().reshape(-1).to(dtype=dtype, device=blk.device))
        W = check_finite(torch.stack(outs), f"{name} matvec output")
        Ab = (blk @ W.T).double().cpu()
        Ab = 0.5 * (Ab + Ab.T)
        T[s0 : s0 + sz, s0 : s0 + sz] = Ab
        W = W - Ab.to(dtype=dtype, device=W.device) @ blk
        if prev is not None:
            ps, pz = prev
            W = W - T[s0 : s0 + sz, ps : ps + pz].to(dtype=dtype, device=W.device) @ Q[ps : ps + pz]
        m = s0 + sz
        B = Q[:m]
        n0 = torch.linalg.vector_norm(W, dim=1)
        W = W - (W @ B.T) @ B
        n1 = torch.linalg.vector_norm(W, dim=1)
        if bool((n1 < 0.7 * n0).any()):
            W = W - (W @ B.T) @ B
        theta, s = torch.linalg.eigh(T[:m, :m])
        scale = max(scale, float(theta.abs().max()))
        thresh = 1e-10 * max(scale, 1e-300)
        Qn, R = _gs_rows(W, empty, thresh)
        sel = _select(theta, min(k, m), which)
        resid = torch.linalg.vector_norm(R @ s[s0:m, sel], dim=0) if R.shape[0] else theta[sel] * 0
        thr = tol * torch.clamp(theta[sel].abs(), min=1e-8 * max(scale, 1e-300))
        conv = resid <= thr
        if bound == "gap" and m > 1:
            conv = conv | (resid**2 <= thr * _ritz_gaps(theta, sel))
        if m == dim:
            conv = torch.ones_like(conv)
            break
        if m >= k and bool(conv.all()):
            break
        if m >= m_max:
            break
        if Qn.shape[0] == 0:  # invariant subspace: continue orthogonally with coupling 0
            Qn = _random_rows(p, B, gen, dim, dtype, device)
            if Qn.shape[0] == 0:
                conv = torch.ones_like(conv)
                break
            R = torch.zeros(Qn.shape[0], sz, dtype=torch.float64, device=HOST)
        nn_ = Qn.shape[0]
        Q[m : m + nn_] = Qn
        T[m : m + nn_, s0:m] = R
        T[s0:m, m : m + nn_] = R.T
        prev, cur = cur, (m, nn_)
    assert theta is not None and s is not None
    sel = _select(theta, min(k, m), which)
    vals = theta[sel].clone()
    vecs = None
    if return_vectors:
        vecs = Q[:m].T @ s[:, sel].to(dtype=dtype, device=Q.device)
    return LanczosResult(vals.to(device), conv.clone().to(device), n_mv, vecs)
