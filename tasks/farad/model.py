"""The CPU backbone (MLP 64-256-256-10), its EMA copy, and the FixMatch losses (pure torch)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class MLP(nn.Module):
    """f(x) = W₃ relu(W₂ relu(W₁ vec(x))) on normalised (n, C, H, W) images."""

    def __init__(self, in_dim: int = 64, hidden: int = 256, n_classes: int = 10) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, n_classes)

    @property
    def widths(self) -> list[int]:
        """Return the activation widths of one forward pass (hidden, hidden, classes)."""
        return [m.out_features for m in self.modules() if isinstance(m, nn.Linear)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the penultimate features relu(W₂ relu(W₁ x)), shape (n, hidden)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float, step: int) -> float:
    """θ_ema ← d θ_ema + (1 − d) θ with d = min(decay, (1 + t)/(10 + t)); return d."""
    d = min(decay, (1.0 + step) / (10.0 + step))
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - d)
    return d


def cosine_lr(step: int, total: int) -> float:
    """Return FixMatch's learning-rate factor cos(7πt / (16T))."""
    return math.cos(7.0 * math.pi * step / (16.0 * max(total, 1)))


def pseudo_targets(logits_weak: torch.Tensor, bias: torch.Tensor | None, mode: str,
                   threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (targets q (n, C), mask (n,)): p = softmax(z_w − b) (b omitted when None);
    hard: q = onehot(argmax p); soft: q = p; mask = [max p ≥ threshold]."""
    z = logits_weak if bias is None else logits_weak - bias
    probs = z.softmax(-1)
    conf, label = probs.max(-1)
    mask = (conf >= threshold).float()
    q = F.one_hot(label, probs.shape[-1]).float() if mode == "hard" else probs
    return q, mask


def consistency_loss(logits_strong: torch.Tensor, targets: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """Return (1/n) Σ_i mask_i · CE(q_i, softmax(z_s,i)) = −(1/n) Σ_i mask_i Σ_k q_ik log p_ik."""
    ce = -(targets * logits_strong.log_softmax(-1)).sum(-1)
    return (ce * mask).mean()
