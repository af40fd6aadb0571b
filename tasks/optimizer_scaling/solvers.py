"""Update rules and closed forms of the five optimizers on the quadratic ½aᵀΣ̂a − aᵀb̂.

All functions are pure and work on float64 tensors; `a` and `b` are (N, m) (m outputs).
"""

from __future__ import annotations

import torch


def quadratic_loss(a: torch.Tensor, sigma: torch.Tensor, b: torch.Tensor,
                   c: torch.Tensor) -> torch.Tensor:
    """Return the mean over outputs of c − 2aᵀb + aᵀΣa (the risk E(y − aᵀz)²)."""
    return (c - 2 * (a * b).sum(0) + (a * (sigma @ a)).sum(0)).mean()


def gradient(a: torch.Tensor, sigma_hat: torch.Tensor, b_hat: torch.Tensor) -> torch.Tensor:
    """Return the full-batch gradient Σ̂a − b̂ of ½aᵀΣ̂a − aᵀb̂."""
    return sigma_hat @ a - b_hat


def polar_factor(g: torch.Tensor) -> torch.Tensor:
    """Return UVᵀ for g = UΣVᵀ (the matrix sign of g; zero for a zero matrix)."""
    if not torch.any(g != 0):
        return torch.zeros_like(g)
    u, _, vh = torch.linalg.svd(g, full_matrices=False)
    return u @ vh


def linear_decay(lr0: float, step: int, total: int) -> float:
    """Return lr0·(1 − step/total), the decaying schedule used by matrix_sign."""
    return lr0 * max(0.0, 1.0 - step / total)


def learned_fraction(rate: torch.Tensor, steps: int) -> torch.Tensor:
    """Return 1 − (1 − rate)^T per mode: the fraction of each mode learned after T steps."""
    return -torch.expm1(steps * torch.log1p(-rate))


def _filter(evals: torch.Tensor, rate: torch.Tensor, steps: int, limit: float) -> torch.Tensor:
    """Return (1 − (1 − rate)^T)/λ per mode, and `limit` where λ ≤ 0."""
    safe = torch.where(evals > 0, evals, torch.ones_like(evals))
    return torch.where(evals > 0, learned_fraction(rate, steps) / safe, limit)


def gd_closed_form(evals: torch.Tensor, evecs: torch.Tensor, b_hat: torch.Tensor, eta: float,
                   steps: int) -> torch.Tensor:
    """Return a_T = U diag((1 − (1 − ηλ)^T)/λ) Uᵀ b̂ (GD from a_0 = 0)."""
    rate = (eta * evals).clamp(max=1.0)
    filt = _filter(evals, rate, steps, limit=eta * steps)
    return evecs @ (filt[:, None] * (evecs.T @ b_hat))


def ng_closed_form(evals: torch.Tensor, evecs: torch.Tensor, b_hat: torch.Tensor, eps: float,
                   steps: int) -> torch.Tensor:
    """Return a_T = U diag((1 − (ε/(λ+ε))^T)/λ) Uᵀ b̂ (unit-step natural gradient from 0); a
    λ ≤ 0 mode gets the iteration's T/ε (its gradient stays −b̂, each step adds b̂/ε)."""
    rate = (evals / (evals + eps)).clamp(min=0.0)
    filt = _filter(evals, rate, steps, limit=steps / eps)
    return evecs @ (filt[:, None] * (evecs.T @ b_hat))


def diag_closed_form(sigma_hat: torch.Tensor, b_hat: torch.Tensor, eta: float,
                     steps: int) -> torch.Tensor:
    """Return a_T of a ← a − ηD⁻¹(Σ̂a − b̂), D = diag(Σ̂), via S = D^{-1/2}Σ̂D^{-1/2}.

    In ã = D^{1/2}a the iteration is GD on S with b̃ = D^{-1/2}b̂, so a_T = D^{-1/2} ã_T.
    """
    scale = sigma_hat.diagonal().rsqrt()
    s_mat = scale[:, None] * sigma_hat * scale[None, :]
    evals, evecs = torch.linalg.eigh(s_mat)
    return scale[:, None] * gd_closed_form(evals, evecs, scale[:, None] * b_hat, eta, steps)


def diag_preconditioned(sigma_hat: torch.Tensor) -> torch.Tensor:
    """Return D^{-1/2}Σ̂D^{-1/2} (similar to D⁻¹Σ̂), D = diag(Σ̂)."""
    scale = sigma_hat.diagonal().rsqrt()
    return scale[:, None] * sigma_hat * scale[None, :]
