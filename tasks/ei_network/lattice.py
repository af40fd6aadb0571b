"""Grids on the unit ring / torus and the wrapped-Gaussian projection kernel."""

from __future__ import annotations

import math

import torch


def grid_coords(side: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return the 1D coordinates j/side, j = 0..side−1 (a regular grid on the unit circle)."""
    return torch.arange(side, dtype=dtype) / side


def wrapped_gauss_unnorm(delta: torch.Tensor, width: float | torch.Tensor) -> torch.Tensor:
    """Return Σ_m exp(−(Δ+m)²/(2d²)) over periodic images m (the density times √(2π)·d).

    The wrapped-Gaussian density on the unit circle is G_d(Δ) = this / (√(2π)·d); its Fourier
    coefficients at integer n are exactly exp(−(2πn)²d²/2).
    """
    d_max = float(width.detach().max()) if isinstance(width, torch.Tensor) else float(width)
    n_img = int(math.ceil(6 * d_max)) + 1
    out = torch.zeros_like(delta if not isinstance(width, torch.Tensor)
                           else delta * width)
    for m in range(-n_img, n_img + 1):
        out = out + torch.exp(-((delta + m) ** 2) / (2 * width**2))
    return out


def factor_matrix(side_post: int, side_pre: int, width: float) -> torch.Tensor:
    """Return F[i, j] = Σ_m exp(−(x_i − y_j + m)²/(2d²)) between two 1D grids (float64)."""
    x = grid_coords(side_post)[:, None]
    y = grid_coords(side_pre)[None, :]
    return wrapped_gauss_unnorm(x - y, width)


def kernel_overlap(width: float, dim: int, wrapped: bool = True, n_terms: int = 50) -> float:
    """Return ∫G_d² over the unit ring/torus: Π_dims Σ_n exp(−(2πn d)²), or (2√π·d)^−dim unwrapped.

    Parseval on the circle gives the wrapped value; for d ≪ 1 it equals the spec's 1/(2√π d)
    per dimension, so that c_ab = N_b / overlap.
    """
    if not wrapped:
        return (2 * math.sqrt(math.pi) * width) ** (-dim)
    per_dim = sum(math.exp(-((2 * math.pi * n * width) ** 2)) for n in range(-n_terms, n_terms + 1))
    return per_dim**dim
