"""Streaming (mergeable, DDP-friendly) feature covariance in float64, and the covariance
spectrum of a linear map's outputs from its inputs' covariance."""

from __future__ import annotations

import torch

from .dense import eigvals_sym, symmetric_gram
from .validate import check_finite


def column_gram(x: torch.Tensor) -> torch.Tensor:
    """Return xᵀx (d, d) for x (rows, d), from its upper block triangle in four column blocks
    (5/8 of one matmul; :func:`symmetric_gram` of xᵀ)."""
    return symmetric_gram(x.T, block=max(32, x.shape[1] // 4))


class StreamingCovariance:
    """Running covariance of features seen batch by batch, accumulated in float64.

    Internally (count n, mean μ, scatter M2 = Σ (x − μ)(x − μ)ᵀ), updated and merged with Chan et
    al.'s pairwise formulas (no cancellation from large means). ``covariance()`` is
    M2 / (n − correction) when centred (torch.cov's convention, correction=1), and the second
    moment Σ x xᵀ / n when ``center=False``. For DDP, :meth:`sums` gives plain sums
    (n, Σx, Σxxᵀ) that can be all-reduced and turned back with :meth:`from_sums`; :meth:`state`
    / :meth:`from_state` round-trip the exact internal state.

    The accumulators live on ``device``; with ``device=None`` they follow the first batch (a GPU
    model's features are accumulated on the GPU, in float64, without copies to the host). Later
    batches on another device are moved to the accumulators'.
    """

    def __init__(
        self,
        dim: int,
        center: bool = True,
        device: torch.device | str | None = None,
        name: str = "features",
    ) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = int(dim)
        self.center = bool(center)
        self.name = name
        self.n = 0
        self._follow = device is None  # take the device of the first batch
        device = torch.get_default_device() if device is None else torch.device(device)
        self.mean = torch.zeros(self.dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(self.dim, self.dim, dtype=torch.float64, device=device)

    def _adopt(self, device: torch.device) -> None:
        """Move the (still empty) accumulators to ``device`` when they follow the first batch."""
        if self._follow and self.n == 0 and device != self.mean.device:
            self.mean, self.m2 = self.mean.to(device), self.m2.to(device)
        self._follow = False

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        if n_b == 0:
            return
        if self.n == 0:  # nothing to merge with: take the batch's mean and scatter as they are
            self.n, self.mean, self.m2 = n_b, mean_b, m2_b
            return
        n_a = self.n
        n = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b + torch.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def update(self, x: torch.Tensor) -> StreamingCovariance:
        """Add a batch x of shape (b, dim) (or (..., dim), flattened to rows); returns self.

        One float64 copy of the batch is made and centred in place (x itself is not changed);
        its column means double as the finiteness check (a NaN or ±Inf entry makes its column's
        mean non-finite, so only then is the batch checked entry by entry)."""
        x = torch.as_tensor(x)
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name}: expected last dim {self.dim}, got shape {tuple(x.shape)}"
            )
        x = x.reshape(-1, self.dim)
        if x.shape[0] == 0:
            return self
        self._adopt(x.device)
        xc = x.to(self.mean.device, torch.float64, copy=True)
        mean_b = xc.mean(0)
        if not bool(torch.isfinite(mean_b).all()):
            check_finite(x, self.name)  # raises, counting the bad entries, unless it overflowed
        xc -= mean_b
        self._combine(x.shape[0], mean_b, column_gram(xc))
        return self

    def merge(self, other: StreamingCovariance) -> StreamingCovariance:
        """Fold another accumulator (same dim and centring) into this one; returns self."""
        if other.dim != self.dim or other.center != self.center:
            raise ValueError("can only merge StreamingCovariance objects of equal dim and center")
        if other.n:
            self._adopt(other.mean.device)
        self._combine(other.n, other.mean.to(self.mean.device, copy=True),
                      other.m2.to(self.m2.device, copy=True))
        return self

    def state(self) -> dict[str, torch.Tensor]:
        """Exact internal state {n, mean, m2, center} as tensors (for checkpoints)."""
        return {
            "n": torch.tensor(self.n, dtype=torch.int64, device=self.mean.device),
            "mean": self.mean.clone(),
            "m2": self.m2.clone(),
            "center": torch.tensor(self.center, device=self.mean.device),
        }

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> StreamingCovariance:
        """Rebuild an accumulator from :meth:`state`."""
        mean = state["mean"]
        obj = cls(mean.numel(), center=bool(state["center"]), device=mean.device)
        obj.n = int(state["n"])
        obj.mean = mean.to(torch.float64).clone()
        obj.m2 = state["m2"].to(torch.float64).clone()
        return obj

    def sums(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n, Σx, Σxxᵀ) as float64 tensors: all_reduce(SUM) them across ranks, then from_sums."""
        n = torch.tensor(float(self.n), dtype=torch.float64, device=self.mean.device)
        s1 = self.mean * self.n
        s2 = self.m2 + torch.outer(self.mean, self.mean) * self.n
        return n, s1, s2

    @classmethod
    def from_sums(
        cls, n: torch.Tensor, s1: torch.Tensor, s2: torch.Tensor, center: bool = True
    ) -> StreamingCovariance:
        """Accumulator from plain sums (n, Σx, Σxxᵀ), e.g. after an all_reduce of :meth:`sums`."""
        obj = cls(s1.numel(), center=center, device=s1.device)
        obj.n = int(round(float(n)))
        if obj.n > 0:
            obj.mean = s1.to(torch.float64) / obj.n
            obj.m2 = s2.to(torch.float64) - torch.outer(obj.mean, obj.mean) * obj.n
        return obj

    def covariance(self, correction: int = 1) -> torch.Tensor:
        """Covariance M2/(n − correction) (centred) or second moment Σxxᵀ/n; float64 (dim, dim)."""
        if self.n == 0:
            raise ValueError(f"{self.name}: no samples accumulated")
        if self.center:
            den = self.n - correction
            if den <= 0:
                raise ValueError(f"{self.name}: need more than {correction} samples, have {self.n}")
            return self.m2 / den
        return (self.m2 + torch.outer(self.mean, self.mean) * self.n) / self.n

    def eigenvalues(self, correction: int = 1) -> torch.Tensor:
        """Ascending float64 eigenvalues of :meth:`covariance`."""
        return eigvals_sym(self.covariance(correction), name=f"{self.name} covariance")


def mapped_covariance_eigvals(cov: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """Ascending float64 eigenvalues of the covariance A C Aᵀ of y = A x + b, for C = cov(x).

    A is (out, in), C is (in, in). When out > in, A C Aᵀ has rank ≤ in and its nonzero
    eigenvalues are those of C AᵀA, i.e. of the symmetric (in, in) matrix S = Lᵀ C L with
    AᵀA = L Lᵀ (Cholesky; C may be singular). Where AᵀA is not positive definite (A of rank
    < in), S = Λ^½ Vᵀ AᵀA V Λ^½ with C = V Λ Vᵀ (Λ clamped at 0) instead. The out-dimensional
    spectrum costs in²·out instead of out³ (and the features of an expanding layer need not be
    accumulated at width out). The result has out values, out − in of them exact zeros. When
    out ≤ in, A C Aᵀ is formed and solved directly.
    """
    C = check_finite(torch.as_tensor(cov), "covariance").to(torch.float64)
    A = check_finite(torch.as_tensor(A), "linear map").to(torch.float64, copy=False)
    if C.dim() != 2 or C.shape[0] != C.shape[1] or A.dim() != 2 or A.shape[1] != C.shape[0]:
        raise ValueError(f"need a square covariance (in, in) and a map (out, in), got "
                         f"{tuple(C.shape)} and {tuple(A.shape)}")
    out_dim, in_dim = A.shape
    if out_dim <= in_dim:
        return eigvals_sym(A @ C @ A.T, name="mapped covariance")
    L, info = torch.linalg.cholesky_ex(column_gram(A))  # AᵀA
    if int(info) == 0:
        S = L.T @ C @ L  # similar to C AᵀA: one Cholesky instead of an eigen-decomposition of C
    else:
        lam, V = torch.linalg.eigh(0.5 * (C + C.T))
        AB = A @ (V * lam.clamp(min=0.0).sqrt())  # C = B Bᵀ, B = V Λ^½
        S = AB.T @ AB
    evals = eigvals_sym(S, name="mapped covariance").clamp(min=0.0)
    return torch.cat([evals.new_zeros(out_dim - in_dim), evals])
