"""Metrics of imbalanced classification and of the bias estimate (pure torch)."""

from __future__ import annotations

import math

import torch


def class_recalls(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Return recall_k = #{pred = k, target = k} / #{target = k} per class (NaN if absent)."""
    hits = torch.zeros(n_classes, dtype=torch.float64, device=pred.device)
    total = torch.zeros_like(hits)
    hits.scatter_add_(0, target, (pred == target).double())
    total.scatter_add_(0, target, torch.ones_like(target, dtype=torch.float64))
    return hits / total.where(total > 0, torch.full_like(total, float("nan")))


def balanced_accuracy(recalls: torch.Tensor) -> float:
    """Return bACC = mean_k recall_k."""
    return float(recalls.mean())


def geometric_mean_recall(recalls: torch.Tensor) -> float:
    """Return GM = (Π_k recall_k)^{1/C} (0 when a class has recall 0)."""
    if bool((recalls <= 0).any()):
        return 0.0
    return float(torch.exp(recalls.log().mean()))


def class_prior(pred: torch.Tensor, n_classes: int, smoothing: float = 1.0) -> torch.Tensor:
    """Return the smoothed class frequencies (count_k + s) / (n + C·s) of predictions."""
    counts = torch.bincount(pred, minlength=n_classes).double()
    return (counts + smoothing) / (counts.sum() + n_classes * smoothing)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Return the Pearson correlation of two vectors (None when either is constant)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return None if den == 0 or not math.isfinite(den) else float((a @ b) / den)
