"""The NTK of the LoRA parameters on the fixed probe set, and what the spec derives from it.

Every kernel comes from `callbacks.spectra` (the structured per-sample Jacobian of the LoRA
updates, `ntk_jacobian`, and `sign_ntk`), on a float64 copy of the classifier; this module
only chooses the output, slices the Jacobian's columns per layer and reads the spectra.
Kernels are (n·C, n·C) matrices (C = 1 for the margin output), float64.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from callbacks.spectra import eigvals_sym, ntk_jacobian, sign_ntk
from callbacks.spectra.ntk import flatten_ntk
from callbacks.spectra.summaries import effective_rank
from tasks.small_lm.lora import layer_of, lora_named_parameters


class ProbeOutput(nn.Module):
    """The kernel's output f(x) of a classifier on inputs [tokens | label] (the label rides as
    the last column, so a per-sample function sees it): `logits` (C outputs) or `margin`
    (1 output: the true-class logit minus the mean of the others)."""

    def __init__(self, clf: nn.Module, output: str) -> None:
        super().__init__()
        self.clf, self.output = clf, str(output)

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        logits = self.clf(xy[:, :-1])
        if self.output == "logits":
            return logits
        C = logits.shape[-1]
        onehot = (torch.arange(C, device=xy.device) == xy[:, -1:]).to(logits.dtype)
        weights = onehot - (1.0 - onehot) / (C - 1)
        return (logits * weights).sum(-1, keepdim=True)


def probe_inputs(tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Return [tokens | label] (n, T + 1), the input of ProbeOutput."""
    return torch.cat([tokens, labels[:, None].to(tokens.dtype)], dim=1)


def float64_probe(clf: nn.Module, output: str) -> ProbeOutput:
    """Return a float64 copy of `clf` (eval mode) with the chosen output."""
    return ProbeOutput(copy.deepcopy(clf).double().eval(), output)


@dataclass
class KernelSet:
    """Jacobian J (n, C, P) of the LoRA parameters, the plain kernel J Jᵀ, the sign kernel,
    and the per-layer blocks J_l J_lᵀ (all (n·C, n·C), float64)."""

    jacobian: torch.Tensor
    plain: torch.Tensor
    sign: torch.Tensor | None
    blocks: dict[int, torch.Tensor] = field(default_factory=dict)


def lora_jacobian(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Return (J (n, C, P) over the LoRA parameters of `model`, the layer of each column)."""
    named = lora_named_parameters(model)
    J = ntk_jacobian(model, x, params=[p for _, p in named], method="auto")
    layers = [layer_of(n) for n, p in named for _ in range(p.numel())]
    return J, layers


def kernel_set(model: nn.Module, x: torch.Tensor, sign: bool) -> KernelSet:
    """Return the KernelSet of `model` (a ProbeOutput) on probe inputs x."""
    J, layers = lora_jacobian(model, x)
    n, C = J.shape[0], J.shape[1]
    Jf = J.reshape(n * C, -1)
    layer_ids = torch.tensor(layers, device=J.device)
    blocks = {int(k): Jf[:, layer_ids == k] @ Jf[:, layer_ids == k].T
              for k in sorted(set(layers))}
    return KernelSet(J, Jf @ Jf.T, flatten_ntk(sign_ntk(J)) if sign else None, blocks)


def spectrum_numbers(M: torch.Tensor, lam: float = 0.0) -> dict[str, float]:
    """Return the spectrum of a symmetric kernel M (float64): mu_max, mu_min (largest and
    smallest eigenvalues), kappa = max|μ|/min|μ| (the 2-norm condition number; = μ_max/μ_min
    for a positive definite kernel; inf when singular), kappa_reg = (μ_max + λ)/(μ_min + λ)
    (the condition number of M + λI; inf when μ_min + λ ≤ 0), trace, effective_rank."""
    ev = eigvals_sym(M.to(torch.float64), name="ntk")
    mags = ev.abs()
    lo, hi = float(mags.min()), float(mags.max())
    mu_min, mu_max = float(ev[0]), float(ev[-1])
    return {"mu_max": mu_max, "mu_min": mu_min, "kappa": hi / lo if lo > 0 else math.inf,
            "kappa_reg": (mu_max + lam) / (mu_min + lam) if mu_min + lam > 0 else math.inf,
            "trace": float(torch.diagonal(M).sum()),
            "effective_rank": effective_rank(ev.clamp(min=0.0), "ntk")}


def weyl_check(blocks: list[torch.Tensor]) -> dict[str, float | list[float] | None]:
    """Return the Weyl checks over the nested sets S_k = {1..k} of PSD blocks, Θ_S = Σ_{l∈S} Θ_l:
    weyl_max_violation = max over k, i of max(0, μ_i(Θ_S) − μ_i(Θ_{S∪l}),
    μ_i(Θ_{S∪l}) − μ_i(Θ_S) − μ_max(Θ_l)) / μ_max(Θ_all) (0 when both inequalities hold),
    mu_min_monotone_violation = max over k of max(0, μ_min(Θ_S) − μ_min(Θ_{S∪l})) / μ_max(Θ_all),
    mu_min_path = [μ_min(Θ_{S_1}), μ_min(Θ_{S_2}), ...]. None for fewer than two blocks."""
    if len(blocks) < 2:
        return {"weyl_max_violation": None, "mu_min_monotone_violation": None,
                "mu_min_path": None}
    total = sum(blocks[1:], blocks[0])
    scale = float(eigvals_sym(total, name="ntk")[-1])
    current = blocks[0]
    ev = eigvals_sym(current, name="ntk")
    path, weyl, mono = [float(ev[0])], 0.0, 0.0
    for block in blocks[1:]:
        nxt = current + block
        ev_next = eigvals_sym(nxt, name="ntk")
        top = float(eigvals_sym(block, name="ntk")[-1])
        weyl = max(weyl, float((ev - ev_next).max()), float((ev_next - ev - top).max()))
        mono = max(mono, path[-1] - float(ev_next[0]))
        path.append(float(ev_next[0]))
        current, ev = nxt, ev_next
    return {"weyl_max_violation": max(weyl, 0.0) / scale,
            "mu_min_monotone_violation": max(mono, 0.0) / scale, "mu_min_path": path}


@torch.no_grad()
def lipschitz_profile(model: nn.Module, x: torch.Tensor, radii: list[float], samples: int,
                      seed: int) -> tuple[list[float], list[float]]:
    """Algorithm 1: for each radius r, `samples` draws θ = θ0 + r·v/‖v‖ (v ~ N(0, I) over the
    LoRA parameters); return (L_avg(r), L_upper(r)) = mean and max of ‖J(θ) − J(θ0)‖_F / r."""
    named = lora_named_parameters(model)
    theta0 = [p.detach().clone() for _, p in named]
    J0, _ = lora_jacobian(model, x)
    gen = torch.Generator().manual_seed(int(seed))
    avg, upper = [], []
    try:
        for r in radii:
            ratios = []
            for _ in range(samples):
                v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p)
                     for p in theta0]
                norm = math.sqrt(sum(float((t * t).sum()) for t in v))
                for (_, p), p0, t in zip(named, theta0, v):
                    p.copy_(p0 + (r / norm) * t)
                with torch.enable_grad():
                    J, _ = lora_jacobian(model, x)
                ratios.append(float(torch.linalg.vector_norm(J - J0)) / r)
            avg.append(sum(ratios) / len(ratios))
            upper.append(max(ratios))
    finally:
        for (_, p), p0 in zip(named, theta0):
            p.copy_(p0)
    return avg, upper


def closed_form_predictions(theta: torch.Tensor, f0: torch.Tensor, y: torch.Tensor,
                            lam: float) -> torch.Tensor:
    """Return f0 + Θ(Θ + λI)⁻¹(y − f0), the train predictions of the linearized model at the
    optimum of Σ_i ½‖f_lin(x_i) − y_i‖² + (λ/2)‖θ − θ0‖² (Θ (n·C, n·C), f0 and y (n, C))."""
    theta = theta.to(torch.float64)
    f0 = f0.to(torch.float64)
    r = (y.to(torch.float64) - f0).reshape(-1)  # the residual in float64, not the inputs' dtype
    eye = torch.eye(theta.shape[0], dtype=torch.float64, device=theta.device)
    alpha = torch.linalg.solve(theta + lam * eye, r)
    return f0 + (theta @ alpha).reshape(f0.shape)
