"""EDM sampling: the ρ-schedule, Heun (second-order) steps with churn, classifier-free guidance.

Schedule: σ_i = (σ_max^{1/ρ} + i/(N − 1)·(σ_min^{1/ρ} − σ_max^{1/ρ}))^ρ, i = 0..N−1, then σ_N = 0
(σ_max = 80, σ_min = 1e-3, ρ = 7). Step i: γ = γ0 (0.8) while σ_i > 1, else 0; t̂ = σ_i(1 + γ);
x̂ = x + √(t̂² − σ_i²)·ε; d = (x̂ − D(x̂; t̂))/t̂; x' = x̂ + (σ_{i+1} − t̂)·d; when σ_{i+1} > 0 the
Heun correction x' = x̂ + (σ_{i+1} − t̂)·(d + d')/2 with d' = (x' − D(x'; σ_{i+1}))/σ_{i+1}.
Guidance: D_w = (1 + w)·D_cond − w·D_uncond.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SIGMA_MAX, SIGMA_MIN, RHO, GAMMA0, GAMMA_MIN = 80.0, 1e-3, 7.0, 0.8, 1.0


def edm_schedule(steps: int, sigma_max: float = SIGMA_MAX, sigma_min: float = SIGMA_MIN,
                 rho: float = RHO) -> torch.Tensor:
    """Return the steps + 1 noise levels (float64): the ρ-schedule from σ_max to σ_min, then 0."""
    i = torch.arange(steps, dtype=torch.float64)
    frac = i / max(steps - 1, 1)
    s = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


def heun_sample(denoise: Callable[[torch.Tensor, float], torch.Tensor], shape: tuple[int, ...],
                mask: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator,
                gamma0: float = GAMMA0, gamma_min: float = GAMMA_MIN,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return x after the EDM Heun sampler over `sigmas` from x ~ N(0, σ_0²) (padded atoms,
    mask (B, A) false, kept at 0); `denoise(x, σ)` returns D(x; σ)."""
    device = mask.device
    m = mask.to(dtype).unsqueeze(-1)

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype) * m

    x = noise() * float(sigmas[0])
    for i in range(len(sigmas) - 1):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        gamma = gamma0 if s > gamma_min else 0.0
        t_hat = s * (1 + gamma)
        x_hat = x + (t_hat**2 - s**2) ** 0.5 * noise() if gamma > 0 else x
        d = (x_hat - denoise(x_hat, t_hat)) / t_hat
        x = x_hat + (s_next - t_hat) * d
        if s_next > 0:
            d2 = (x - denoise(x, s_next)) / s_next
            x = x_hat + (s_next - t_hat) * 0.5 * (d + d2)
    return x * m


def guided(d_cond: torch.Tensor, d_uncond: torch.Tensor, w: float) -> torch.Tensor:
    """Return (1 + w)·D_cond − w·D_uncond."""
    return (1 + w) * d_cond - w * d_uncond
