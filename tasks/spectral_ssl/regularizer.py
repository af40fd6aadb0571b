"""The spectral regulariser R(Z) (our reconstruction; the paper's Appendix E was not available).

Z (n×d) is centred, C = ZᵀZ/n, p_i = λ_i/Σλ_j. Every form is ≥ 0, zero iff the spectrum of C is
uniform, and invariant to rescaling Z (normalised by tr C):
  flat_pr     d·tr(C²)/tr(C)² − 1 = d·Σp_i² − 1 = d/PR − 1      (no eigendecomposition)
  kl_uniform  KL(uniform ‖ p) = −(1/d)·Σ log(d·p_i)              (eigvalsh, eigenvalues + eps)
  frobenius   ‖C/tr C − I/d‖_F² = flat_pr/d
"""

from __future__ import annotations

from collections.abc import Callable

import torch

KL_EPS = 1e-4  # kl_uniform: eigenvalues are floored at KL_EPS·tr(C)/d before the log


def batch_covariance(z: torch.Tensor) -> torch.Tensor:
    """Return C = Z_cᵀZ_c/n for the centred batch Z_c = Z − mean (d×d, differentiable)."""
    zc = z - z.mean(dim=0, keepdim=True)
    return zc.T @ zc / z.shape[0]


def flat_pr(z: torch.Tensor) -> torch.Tensor:
    """Return d·tr(C²)/tr(C)² − 1 (0 for a flat spectrum; d/PR − 1)."""
    c = batch_covariance(z)
    d = c.shape[0]
    return d * (c * c).sum() / torch.diagonal(c).sum().square() - 1.0


def kl_uniform(z: torch.Tensor) -> torch.Tensor:
    """Return KL(uniform ‖ p) = −(1/d)·Σ_i log(d·p_i), p from eigvalsh(C) + KL_EPS·tr(C)/d."""
    c = batch_covariance(z)
    d = c.shape[0]
    lam = torch.linalg.eigvalsh(c).clamp(min=0.0) + KL_EPS * torch.diagonal(c).sum() / d
    p = lam / lam.sum()
    return -torch.log(d * p).mean()


def frobenius(z: torch.Tensor) -> torch.Tensor:
    """Return ‖C/tr(C) − I/d‖_F²."""
    c = batch_covariance(z)
    d = c.shape[0]
    eye = torch.eye(d, dtype=c.dtype, device=c.device)
    return (c / torch.diagonal(c).sum() - eye / d).square().sum()


REGULARIZERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flat_pr": flat_pr, "kl_uniform": kl_uniform, "frobenius": frobenius}


def spectral_penalty(z: torch.Tensor, form: str) -> torch.Tensor:
    """Return R(z) of the named form; 0 (keeping the graph) for fewer than 2 rows or tr C = 0."""
    if z.shape[0] < 2 or float(z.detach().var(dim=0).sum()) <= 0.0:
        return z.sum() * 0.0
    return REGULARIZERS[form](z)
