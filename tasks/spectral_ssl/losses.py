"""The self-supervised losses: NT-Xent (SimCLR) and the symmetric stop-gradient loss (SimSiam)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return the NT-Xent loss over the 2B views, mean over i of
    −log[exp(cos(h_i, h_j(i))/τ) / Σ_{k≠i} exp(cos(h_i, h_k)/τ)], j(i) = the other view of i."""
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def neg_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Return D(p, z) = −mean_i cos(p_i, z_i)."""
    return -F.cosine_similarity(p, z, dim=1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor
                 ) -> torch.Tensor:
    """Return ½D(p1, sg(z2)) + ½D(p2, sg(z1)), sg = stop-gradient (detach)."""
    return 0.5 * neg_cosine(p1, z2.detach()) + 0.5 * neg_cosine(p2, z1.detach())
