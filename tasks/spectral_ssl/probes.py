"""Linear probes on frozen features and the alignment of the top principal directions.

Probes are scikit-learn logistic regressions (L2, strength 1/C) on numpy copies of the features.
Feature scaling is fitted on the probe's training set: `global` centres and divides by
sqrt(tr C/d) (one scalar, so the probe still sees the spectrum's shape: low-energy directions stay
hard to use), `standard` z-scores every dimension.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from callbacks.spectra import StreamingCovariance


def scaler(train: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (mean, scale) fitted on `train`: scale = sqrt(mean variance) (`global`) or the
    per-dimension std (`standard`), floored at 1e-12."""
    mean = train.mean(axis=0)
    var = train.var(axis=0)
    scale = np.full_like(mean, np.sqrt(var.mean())) if mode == "global" else np.sqrt(var)
    return mean, np.maximum(scale, 1e-12)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, c: float,
                scaling: str, max_iter: int) -> np.ndarray:
    """Return the predicted labels of `x_eval` from a logistic regression fitted on the train set."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, scale = scaler(x_train, scaling)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit((x_train - mean) / scale, y_train)
    return clf.predict((x_eval - mean) / scale)


def group_accuracies(pred: np.ndarray, y: np.ndarray, a: np.ndarray, n_classes: int,
                     n_attr: int) -> np.ndarray:
    """Return the (n_classes, n_attr) accuracies per group (y, a); NaN for an empty group."""
    acc = np.full((n_classes, n_attr), np.nan)
    for c in range(n_classes):
        for v in range(n_attr):
            sel = (y == c) & (a == v)
            if sel.any():
                acc[c, v] = float((pred[sel] == c).mean())
    return acc


def accuracy_summary(pred: np.ndarray, y: np.ndarray, a: np.ndarray, n_classes: int,
                     n_attr: int) -> dict[str, float]:
    """Return avg_acc (over samples), worst_group_acc (min over groups) and mean_group_acc."""
    groups = group_accuracies(pred, y, a, n_classes, n_attr)
    return {"avg_acc": float((pred == y).mean()), "worst_group_acc": float(np.nanmin(groups)),
            "mean_group_acc": float(np.nanmean(groups))}


def top_directions(features: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mean, top-k eigenvectors (d, k) of the float64 feature covariance, descending)."""
    cov = StreamingCovariance(features.shape[1], device=features.device, name="features")
    cov.update(features)
    _, vecs = torch.linalg.eigh(cov.covariance())
    return cov.mean, vecs[:, -k:].flip(-1)


def correlation_ratio(score: torch.Tensor, labels: torch.Tensor) -> float:
    """Return η² = Σ_g n_g (mean_g − mean)² / Σ_i (s_i − mean)², the share of the score's variance
    explained by the label's group means (0..1)."""
    s = score.to(torch.float64)
    total = float((s - s.mean()).square().sum())
    if total <= 0:
        return 0.0
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(classes.numel(), dtype=torch.float64, device=s.device)
    counts = torch.zeros_like(sums)
    sums.index_add_(0, inverse, s)
    counts.index_add_(0, inverse, torch.ones_like(s))
    between = float((counts * (sums / counts - s.mean()).square()).sum())
    return between / total
