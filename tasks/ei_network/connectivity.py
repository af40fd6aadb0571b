"""The random connectivity J of the spatial E/I network (units ordered E first, then I).

p_ab(Δx) = (K_ab/N_b)·Π_dims G_{d_ab}(Δx) = α·Π_dims Σ_m exp(−(Δx+m)²/(2d²)) (clipped at 1),
K_ab = α·(√(2π)·d_ab)^dim·N_b, and an existing synapse has weight J ~ N(ḡ_ab/K_ab, g²/K_ab).

The wrapped kernel's peak α·(Σ_m e^{−m²/(2d²)})^dim exceeds α, and exceeds 1 for wide ranges
(small N_E at fixed K). Clipping p at 1 removes a share s_ab = Σ max(p − 1, 0)/Σ p of the
expected in-degree K_ab that the theory assumes; `block_clipping` computes it from the grids
alone (before any draw), the draw reports it measured on its own probability matrix, and
`tasks.ei_network.config` refuses a config whose share exceeds its stated bound.
"""

from __future__ import annotations

import functools
import math

import torch

from tasks.ei_network.lattice import factor_matrix, grid_coords, wrapped_gauss_unnorm

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


def lag_profile(side_post: int, side_pre: int, width: float) -> torch.Tensor:
    """Return f_k = Σ_m exp(−(k/L + m)²/(2d²)) for k = 0..L−1, L = lcm(side_post, side_pre).

    Between the grids i/side_post and j/side_pre every offset Δ = i/side_post − j/side_pre
    (mod 1) is a multiple k/L, each taken by exactly gcd(side_post, side_pre) pairs (i, j): the
    1D factor matrix of `factor_matrix` holds the values f_k, each equally often (float64).
    """
    return wrapped_gauss_unnorm(grid_coords(math.lcm(side_post, side_pre)), width)


def clipped_share_of(p: torch.Tensor) -> float:
    """Return s = Σ max(p − 1, 0) / Σ p: the share of the expected connections Σ p that clipping
    the probabilities p at 1 removes (0 when no p exceeds 1)."""
    p = p.to(torch.float64)
    return float((p - 1).clamp(min=0).sum() / p.sum())


def clipped_share(profile: torch.Tensor, density: float, dim: int) -> float:
    """Return s = Σ max(p − 1, 0) / Σ p of one block from its `lag_profile` f, p = α·Π_dims f.

    1D: p runs over α·f_k; 2D: over α·f_k·f_l for all pairs (k, l), each equally often, and only
    the f_k with α·f_k·max f > 1 can take part in a product above 1.
    """
    f = profile.to(torch.float64)
    if dim == 1:
        return clipped_share_of(density * f)
    hot = f[density * f * f.max() > 1]
    excess = (density * hot[:, None] * hot[None, :] - 1).clamp(min=0).sum()
    return float(excess / (density * f.sum() ** 2))


@functools.lru_cache(maxsize=512)
def block_clipping(side_post: int, side_pre: int, width: float, density: float,
                   dim: int) -> tuple[float, float]:
    """Return (peak p, clipped share s) of one block: peak = α·(Σ_m e^{−m²/(2d²)})^dim (the
    offset 0, which every pair of grids has), s = Σ max(p − 1, 0)/Σ p (`clipped_share`)."""
    f = lag_profile(side_post, side_pre, width)
    return density * float(f[0]) ** dim, clipped_share(f, density, dim)


def draw_connectivity(sides: dict[str, int], gbar: dict[str, float], ranges: dict[str, float],
                      g_het: float, density: float, dim: int,
                      seed: int) -> tuple[torch.Tensor, dict[str, float]]:
    """Return (J, info): J (N×N float32, row = postsynaptic); info holds the largest p before
    clipping (`max_connection_prob`), each block's clipped share of its expected connections,
    s_ab = Σ max(p − 1, 0)/Σ p measured on the probability matrix drawn from
    (`clipped_share_<ab>`), and their maximum (`clipped_share`).

    `sides` maps 'e'/'i' to grid sides; blocks are drawn in the order ee, ie, ei, ii from one
    generator seeded with `seed`.
    """
    gen = torch.Generator().manual_seed(int(seed))
    n = {k: s**dim for k, s in sides.items()}
    p_max = 0.0
    shares: dict[str, float] = {}
    blocks: dict[str, torch.Tensor] = {}
    for blk in BLOCKS:
        post, pre = blk[0], blk[1]
        p = connection_prob(sides[post], sides[pre], ranges[blk], density, dim)
        p_max = max(p_max, float(p.max()))
        shares[blk] = clipped_share_of(p)
        k = in_degree(density, ranges[blk], n[pre], dim)
        mask = torch.rand(p.shape, generator=gen, dtype=torch.float64) < p.clamp(max=1.0)
        w = gbar[blk] / k + g_het / math.sqrt(k) * torch.randn(p.shape, generator=gen,
                                                                 dtype=torch.float64)
        blocks[blk] = (w * mask).to(torch.float32)
    rows = [torch.cat([blocks["ee"], blocks["ei"]], 1), torch.cat([blocks["ie"], blocks["ii"]], 1)]
    info = {"max_connection_prob": p_max, "clipped_share": max(shares.values()),
            **{f"clipped_share_{blk}": v for blk, v in shares.items()}}
    return torch.cat(rows, 0), info


def to_coo(j: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return the non-zero entries of J as {'post', 'pre', 'w'} (int32, int32, float32)."""
    post, pre = torch.nonzero(j, as_tuple=True)
    return {"post": post.to(torch.int32), "pre": pre.to(torch.int32), "w": j[post, pre]}


def from_coo(post: torch.Tensor, pre: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    """Return the dense N×N float32 J from its non-zero entries."""
    j = torch.zeros(n, n, dtype=torch.float32)
    j[post.long(), pre.long()] = w.to(torch.float32)
    return j
