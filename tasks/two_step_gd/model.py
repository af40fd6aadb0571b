"""The two-layer network f(x) = aᵀσ(Wx), its mean-squared loss and the manual GD step.

Pure functions on tensors; every function keeps the dtype and device of its inputs.
Shapes: X (n, d) inputs, y (n,) labels, W (N, d) first layer, a (N,) frozen second layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

RELU_MEAN = 1.0 / math.sqrt(2.0 * math.pi)  # E relu(z), z ~ N(0, 1)


def activation(name: str) -> tuple[Callable[[torch.Tensor], torch.Tensor],
                                   Callable[[torch.Tensor], torch.Tensor]]:
    """Return (σ, σ') for `softplus` (σ = log(1 + eᶻ)) or `relu_centered` (σ = relu − 1/√(2π))."""
    if name == "softplus":
        return F.softplus, torch.sigmoid
    if name == "relu_centered":
        return (lambda z: torch.relu(z) - RELU_MEAN), (lambda z: (z > 0).to(z.dtype))
    raise ValueError(f"unknown activation {name!r}; choose softplus or relu_centered")


def he2(z: torch.Tensor) -> torch.Tensor:
    """Return the second Hermite polynomial He2(z) = z² − 1."""
    return z * z - 1.0


def target_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return σ*: `ie1` z + He2(z)/√2 (information exponent 1) or `ie2` He2(z)/√2 (IE 2)."""
    if name == "ie1":
        return lambda z: z + he2(z) / math.sqrt(2.0)
    if name == "ie2":
        return lambda z: he2(z) / math.sqrt(2.0)
    raise ValueError(f"unknown target {name!r}; choose ie1 or ie2")


def step_size(scale: float, width: int, alpha: float) -> float:
    """Return the step size η = c · N^α."""
    return float(scale) * float(width) ** float(alpha)


def forward(w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, act: str) -> torch.Tensor:
    """Return f(X) = σ(X Wᵀ) a, shape (n,)."""
    sigma, _ = activation(act)
    return sigma(x @ w.T) @ a


def loss(w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor, act: str) -> float:
    """Return L(W) = (1/2n) Σ_i (f(x_i) − y_i)²."""
    r = y - forward(w, a, x, act)
    return float(0.5 * (r * r).mean())


def gradient(w: torch.Tensor, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
             act: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (∇_W L, r): row j of ∇L is −(1/n) Σ_i r_i a_j σ'(w_jᵀx_i) x_iᵀ, r = y − f(X).

    In matrix form ∇L = −(1/n) diag(a) σ'(XWᵀ)ᵀ diag(r) X, shape (N, d).
    """
    sigma, dsigma = activation(act)
    pre = x @ w.T
    r = y - sigma(pre) @ a
    weighted = dsigma(pre) * r[:, None]
    grad = -(weighted.T @ x) * a[:, None] / x.shape[0]
    return grad, r


def features(w: torch.Tensor, x: torch.Tensor, act: str, center: bool = True) -> torch.Tensor:
    """Return the feature matrix F = σ(X Wᵀ) (n, N), column-centred over samples if `center`.

    Centring removes the rank-one mean E_x σ(wᵀx) 1ᵀ, which is an outlier of every F.
    """
    sigma, _ = activation(act)
    feats = sigma(x @ w.T)
    return feats - feats.mean(0, keepdim=True) if center else feats
