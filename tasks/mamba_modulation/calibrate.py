"""Calibration of the per-layer scales: the uniform grid, SPSA (the official schedule) and the
optional backprop scale. Each calibrator takes an objective P(s) (a callable on a list of
per-layer scales, evaluated on the calibration sequences at the target length) and returns
the scales it picks with a trace of what it evaluated.

SPSA (official code of Mamba Modulation / MambaExtend): s ~ U(init)^L; for x = 0 … iters − 1:
    c_x = 0.1 / (1 + x)^0.1,   a_x = 0.001 · cos(x π / 198),   δ ∈ {±1}^L Rademacher,
    s± = clip(s ± c_x δ),   ĝ = (P(s+) − P(s−)) δ / (2 c_x),   s ← clip(s − a_x ĝ),
and when P(s+) or P(s−) is lower than P(s), that point is kept instead (the official code
compares on its evaluation set; here every P is on the calibration set). clip = to
[scale_min, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

Objective = Callable[[list[float]], float]


def spsa_schedule(x: int) -> tuple[float, float]:
    """Return (c_x, a_x) = (0.1 / (1 + x)^0.1, 0.001 · cos(x π / 198)) of iteration x."""
    return 0.1 / (1 + x) ** 0.1, 0.001 * math.cos(x * math.pi / 198)


def clip(values: Sequence[float], low: float, high: float = 1.0) -> list[float]:
    """Return each value clipped to [low, high]."""
    return [min(max(float(v), low), high) for v in values]


def grid_search(objective: Objective, grid: Sequence[float], n_layers: int
                ) -> tuple[list[float], list[dict[str, Any]]]:
    """Return (scales, trace): the grid value s minimising P([s] · n_layers) (the first one on
    ties, in grid order) repeated per layer, and the trace [{"s", "P"}] of every grid point."""
    trace = [{"s": float(s), "P": float(objective([float(s)] * n_layers))} for s in grid]
    best = min(range(len(trace)), key=lambda i: trace[i]["P"])
    return [trace[best]["s"]] * n_layers, trace


def spsa(objective: Objective, n_layers: int, iters: int, init: Sequence[float],
         scale_min: float, gen: torch.Generator) -> tuple[list[float], list[dict[str, Any]]]:
    """Return (scales, trace) of SPSA with the official schedule (module docstring); the trace
    holds, per iteration x: c, a, delta, s_plus, s_minus, P_plus, P_minus, s (after the step and
    the keep-the-best rule) and P (its objective)."""
    low, high = float(init[0]), float(init[1])
    s = clip((low + (high - low) * torch.rand(n_layers, generator=gen)).tolist(), scale_min)
    trace: list[dict[str, Any]] = []
    for x in range(iters):
        c, a = spsa_schedule(x)
        delta = (torch.randint(0, 2, (n_layers,), generator=gen) * 2 - 1).tolist()
        s_plus = clip([v + c * d for v, d in zip(s, delta)], scale_min)
        s_minus = clip([v - c * d for v, d in zip(s, delta)], scale_min)
        p_plus, p_minus = objective(s_plus), objective(s_minus)
        g = [(p_plus - p_minus) * d / (2 * c) for d in delta]
        s = clip([v - a * gi for v, gi in zip(s, g)], scale_min)
        p = objective(s)
        if p > p_plus:
            s, p = s_plus, p_plus
        if p > p_minus:
            s, p = s_minus, p_minus
        trace.append({"x": x, "c": c, "a": a, "delta": delta, "s_plus": s_plus,
                      "s_minus": s_minus, "P_plus": p_plus, "P_minus": p_minus,
                      "s": list(s), "P": p})
    return s, trace


def backprop_scale(loss_fn: Callable[[], torch.Tensor], params: list[torch.nn.Parameter],
                   steps: int, lr: float, scale_min: float) -> list[dict[str, Any]]:
    """Train the scale parameters in place by AdamW on `loss_fn()` (everything else frozen),
    clamped to [scale_min, 1] after each step (the official passkey code clamps at >= 0.01
    only; the upper bound keeps every scale in the range of the other calibrators); return
    the trace [{"step", "loss"}]."""
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    trace = []
    for step in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p in params:
                p.clamp_(min=scale_min, max=1.0)
        trace.append({"step": step, "loss": float(loss.detach())})
    return trace
