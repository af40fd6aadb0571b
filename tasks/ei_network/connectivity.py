"""The random connectivity J of the spatial E/I network (units ordered E first, then I).

p_ab(Δx) = (K_ab/N_b)·Π_dims G_{d_ab}(Δx) = α·Π_dims Σ_m exp(−(Δx+m)²/(2d²)) (clipped at 1),
K_ab = α·(√(2π)·d_ab)^dim·N_b, and an existing synapse has weight J ~ N(ḡ_ab/K_ab, g²/K_ab).
"""

from __future__ import annotations

import math

import torch

from tasks.ei_network.lattice import factor_matrix

BLOCKS = ("ee", "ie", "ei", "ii")  # (post, pre)


def in_degree(density: float, width: float, n_pre: int, dim: int) -> float:
    """Return K_ab = α·(√(2π)·d)^dim·N_b, the mean in-degree from population b."""
    return density * (math.sqrt(2 * math.pi) * width) ** dim * n_pre


def connection_prob(side_post: int, side_pre: int, width: float, density: float,
                    dim: int) -> torch.Tensor:
    """Return the (N_a, N_b) matrix p_ab = α·Π_dims F(Δ) (float64, not yet clipped)."""
    f = factor_matrix(side_post, side_pre, width)
    if dim == 1:
        return density * f
    # unit index = iy·side + ix; p = α·F[iy, jy]·F[ix, jx]
    p = torch.einsum("ab,cd->acbd", f, f)
    return density * p.reshape(side_post**2, side_pre**2)


def draw_connectivity(sides: dict[str, int], gbar: dict[str, float], ranges: dict[str, float],
                      g_het: float, density: float, dim: int,
                      seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (J, info): J (N×N float32, row = postsynaptic) and the largest p before clipping.

    `sides` maps 'e'/'i' to grid sides; blocks are drawn in the order ee, ie, ei, ii from one
    generator seeded with `seed`.
    """
    gen = torch.Generator().manual_seed(int(seed))
    n = {k: s**dim for k, s in sides.items()}
    rows = []
    p_max = 0.0
    blocks: dict[str, torch.Tensor] = {}
    for blk in BLOCKS:
        post, pre = blk[0], blk[1]
        p = connection_prob(sides[post], sides[pre], ranges[blk], density, dim)
        p_max = max(p_max, float(p.max()))
        k = in_degree(density, ranges[blk], n[pre], dim)
        mask = torch.rand(p.shape, generator=gen, dtype=torch.float64) < p.clamp(max=1.0)
        w = gbar[blk] / k + g_het / math.sqrt(k) * torch.randn(p.shape, generator=gen,
                                                                 dtype=torch.float64)
        blocks[blk] = (w * mask).to(torch.float32)
    rows = [torch.cat([blocks["ee"], blocks["ei"]], 1), torch.cat([blocks["ie"], blocks["ii"]], 1)]
    return torch.cat(rows, 0), {"max_connection_prob": p_max}


def to_coo(j: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return the non-zero entries of J as {'post', 'pre', 'w'} (int32, int32, float32)."""
    post, pre = torch.nonzero(j, as_tuple=True)
    return {"post": post.to(torch.int32), "pre": pre.to(torch.int32), "w": j[post, pre]}


def from_coo(post: torch.Tensor, pre: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    """Return the dense N×N float32 J from its non-zero entries."""
    j = torch.zeros(n, n, dtype=torch.float32)
    j[post.long(), pre.long()] = w.to(torch.float32)
    return j
