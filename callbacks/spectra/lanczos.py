"""Lanczos eigenvalues of a symmetric linear operator given only as v ↦ A v.

(Block) Lanczos with re-orthogonalisation: the three-term (block) recurrence, then a classical
Gram–Schmidt pass against the whole basis, repeated when it removed most of the vector (DGKS),
so Ritz values do not produce ghost copies. ``reorth="full"`` (the default) makes that pass for
every vector; ``reorth="partial"`` (single start vector only) makes it only where Simon's
estimate of the loss of orthogonality passes √ε, keeping the basis semi-orthogonal, which
leaves the Ritz values accurate to working precision (Simon 1984) at a fraction of the basis
traffic. The estimate assumes the operator is accurate to its output dtype: for products
computed in a lower precision than they are returned in, keep "full". A Ritz pair (θ, y = Q s) is
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
REORTHS = ("full", "partial")


class LanczosResult(NamedTuple):
    """Result of :func:`lanczos`."""

    eigenvalues: (
        torch.Tensor
    )  # (k,) float64; descending for LA/LM (by |λ| for LM), ascending for SA
    converged: torch.Tensor  # (k,) bool, by the residual (or gap) bound
    n_matvecs: int  # number of operator applications
    eigenvectors: torch.Tensor | None = None  # (dim, k) Ritz vectors when asked for
    n_reorth: int = 0  # new basis vectors orthogonalised against the whole basis


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


def _omega_next(
    om_cur: torch.Tensor,
    om_prev: torch.Tensor | None,
    T: torch.Tensor,
    j: int,
    beta_new: float,
    noise: float,
) -> torch.Tensor:
    """Simon's estimate ω_{j+1,k} ≈ q_{j+1}·q_k (k = 0 … j+1) of the basis' loss of orthogonality.

    With α_k = T[k, k], β_k = T[k+1, k] (β_j = ``beta_new``), ω_{j,·} = ``om_cur`` and
    ω_{j−1,·} = ``om_prev``: β_j ω_{j+1,k} = β_k ω_{j,k+1} + (α_k − α_j) ω_{j,k}
    + β_{k−1} ω_{j,k−1} − β_{j−1} ω_{j−1,k} ± noise for k < j (the sign of the rest: the
    rounding is assumed to add up), ω_{j+1,j} = noise/β_j (local orthogonality), ω_{j+1,j+1} = 1
    (H. D. Simon, *The Lanczos algorithm with partial reorthogonalization*, Math. Comp. 42, 1984).
    ``noise`` = ε·‖A‖ (ε the working precision). Returns a float64 host vector of length j + 2.
    """
    new = torch.zeros(j + 2, dtype=torch.float64, device=HOST)
    new[j + 1] = 1.0
    new[j] = noise / beta_new
    if j >= 1 and om_prev is not None:
        alpha = torch.diagonal(T)[: j + 1]
        beta = torch.diagonal(T, -1)[:j]
        t = beta * om_cur[1 : j + 1] + (alpha[:j] - alpha[j]) * om_cur[:j]
        t[1:] += beta[: j - 1] * om_cur[: j - 1]
        t -= beta[j - 1] * om_prev[:j]
        new[:j] = (t + torch.copysign(torch.full_like(t, noise), t)) / beta_new
    return new


class _PartialReorth:
    """Wiring of partial re-orthogonalisation for a single-vector run: Simon's ω estimate
    decides which new vectors are orthogonalised against the whole basis, with two checks.

    A new vector is orthogonalised in full when its estimate passes √ε, or when the one before
    was (Simon's rule: the estimate of the next one would still carry the old loss), or when
    ``CHECK_EVERY`` vectors have passed without one. A full pass measures the true overlaps
    |Qᵀw|/‖w‖ for free: overlaps above the estimate (not just after a reset) scale the noise
    model up to match (an operator noisier than its dtype, e.g. float32 arithmetic behind a
    float64 basis); overlaps above √ε and 10x the estimate mean the estimate missed a loss of
    orthogonality, and the run falls back to full re-orthogonalisation.
    """

    CHECK_EVERY = 8

    def __init__(self, eps: float) -> None:
        self.eps = eps
        self.on = True
        self.gain = 1.0  # noise-model scale learned from the measured overlaps
        self.anorm = 0.0  # Gershgorin bound of ‖T‖, the ‖A‖ of the noise model
        self.om_cur = torch.ones(1, dtype=torch.float64, device=HOST)
        self.om_prev: torch.Tensor | None = None
        self.om_new: torch.Tensor | None = None
        self.force = False
        self.since_full = 0
        self.evolved = False

    def needs_full(self, T: torch.Tensor, j: int, beta0: float) -> bool:
        """Whether the new vector q_{j+1} (unnormalised norm ``beta0``) needs a full pass."""
        if not self.on:
            return True
        off = float(T[j, j - 1]) if j else 0.0
        self.anorm = max(self.anorm, abs(float(T[j, j])) + beta0 + off)
        self.om_new = None
        if beta0 > 0:
            noise = self.eps * self.anorm * self.gain
            self.om_new = _omega_next(self.om_cur, self.om_prev, T, j, beta0, noise)
        due = self.since_full + 1 >= self.CHECK_EVERY
        full = (self.force or self.om_new is None or due
                or float(self.om_new[: j + 1].abs().max()) > math.sqrt(self.eps))
        self.evolved = full and not self.force  # not just after a reset: worth calibrating on
        self.force = full and not self.force
        self.since_full = 0 if full else self.since_full + 1
        return full

    def measured(self, overlaps: torch.Tensor, beta0: float) -> None:
        """Calibrate on the overlaps Qᵀw of a full pass (w of norm ``beta0``) and reset ω."""
        if not self.on or self.om_new is None:
            return
        j1 = overlaps.numel()
        true = float(overlaps.abs().max()) / beta0
        est = float(self.om_new[:j1].abs().max())
        if true > max(10.0 * est, math.sqrt(self.eps)):  # a loss the estimate did not see
            self.on = False
        elif self.evolved and true > est > 0:
            self.gain *= true / est
        self.om_new[:j1] = self.eps

    def advance(self, m: int, restarted: bool) -> None:
        """Make the new vector (index ``m``) current; a restart starts it orthogonal."""
        if restarted or self.om_new is None:
            self.om_new = torch.full((m + 1,), self.eps, dtype=torch.float64, device=HOST)
            self.om_new[m] = 1.0
            self.force = True
        self.om_prev, self.om_cur = self.om_cur, self.om_new


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
    reorth: str = "full",
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
    ``reorth``: "full" or "partial" (see the module docstring; block_size > 1 is always full);
    ``n_reorth`` in the result counts the vectors given a full pass.
    """
    check_choice(which, WHICH, "which")
    check_choice(bound, BOUNDS, "bound")
    check_choice(reorth, REORTHS, "reorth")
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
    n_reorth = 0
    pro: _PartialReorth | None = None
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
        if pro is None and reorth == "partial" and p == 1:  # w: the first product, p == 1
            out_eps = torch.finfo(w.dtype).eps if w.is_floating_point() else 0.0
            pro = _PartialReorth(max(torch.finfo(dtype).eps, out_eps))  # a float32 operator: its ε
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
        beta0 = float(n0[0])
        if pro is None or pro.needs_full(T, s0, beta0):
            C = W @ B.T
            W = W - C @ B
            n1 = torch.linalg.vector_norm(W, dim=1)
            if bool((n1 < 0.7 * n0).any()):
                W = W - (W @ B.T) @ B
            n_reorth += sz
            if pro is not None:
                pro.measured(C, beta0)
        else:  # semi-orthogonal: a second local pass against the current vector only
            W = W - (W @ blk.T) @ blk
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
        restarted = Qn.shape[0] == 0
        if restarted:  # invariant subspace: continue orthogonally with coupling 0
            Qn = _random_rows(p, B, gen, dim, dtype, device)
            if Qn.shape[0] == 0:
                conv = torch.ones_like(conv)
                break
            R = torch.zeros(Qn.shape[0], sz, dtype=torch.float64, device=HOST)
        if pro is not None:
            pro.advance(m, restarted)
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
    return LanczosResult(vals.to(device), conv.clone().to(device), n_mv, vecs, n_reorth)
