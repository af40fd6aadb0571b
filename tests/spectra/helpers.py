"""Helpers for the spectral-math tests: constructed matrices with known spectra."""

from __future__ import annotations

import torch


def random_orthogonal(n: int, gen: torch.Generator) -> torch.Tensor:
    """Haar-ish random orthogonal matrix (QR of a Gaussian), float64."""
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def sym_with_spectrum(d: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Q diag(d) Qᵀ for a random orthogonal Q, exactly symmetric."""
    q = random_orthogonal(d.numel(), gen)
    a = (q * d) @ q.T
    return 0.5 * (a + a.T)
