"""Predictions of the spec: term exponents, outlier counts of W2, spike counts of the features.

Two-step law (Moniri & Hassani): the second update splits into rank-one terms k = 0, 1, 2, ...
of norm N^{e_k}, e_k = α2 − k(1/2 − α1); k = 0 repeats the step-1 direction.
One-step law (Moniri, Lee, Hassani, Dobriban): with η ≍ N^α the features σ(XW1ᵀ) carry spikes
k = 1, 2, ... of strength N^{kα + 1 − k/2} against a bulk of √N, i.e. k < 1/(1 − 2α).
"""

from __future__ import annotations

import math

EPS = 1e-9  # floating-point slack for the integer boundary cases (e.g. 0.45/0.15 = 3)


def term_exponents(alpha1: float, alpha2: float, n_terms: int) -> list[float]:
    """Return e_k = α2 − k(1/2 − α1) for k = 0 .. n_terms − 1."""
    return [alpha2 - k * (0.5 - alpha1) for k in range(n_terms)]


def predicted_extra_floor(alpha1: float, alpha2: float) -> int:
    """Return the paper's count ⌊α2 / (1/2 − α1)⌋ (new directions beyond the step-1 one)."""
    return int(math.floor(alpha2 / (0.5 - alpha1) + EPS))


def predicted_extra_strict(alpha1: float, alpha2: float) -> int:
    """Return #{k ≥ 1 : e_k > 0}: the floor count minus the boundary term e_k = 0."""
    ratio = alpha2 / (0.5 - alpha1)
    return int(math.ceil(ratio - EPS)) - 1 if ratio > EPS else 0


def predicted_outliers_w2(alpha1: float, alpha2: float, strict: bool = False) -> int:
    """Return the outliers of W2 counting the step-1 direction: 1 + ⌊α2/(1/2 − α1)⌋ (or strict)."""
    extra = predicted_extra_strict if strict else predicted_extra_floor
    return 1 + extra(alpha1, alpha2)


def predicted_feature_spikes(alpha: float) -> int:
    """Return the one-step spike count ℓ = #{k ≥ 1 : k < 1/(1 − 2α)} of σ(X W1ᵀ).

    ℓ spikes for α ∈ ((ℓ − 1)/(2ℓ), ℓ/(2ℓ + 2)).
    """
    bound = 1.0 / (1.0 - 2.0 * alpha)
    return int(math.ceil(bound - EPS)) - 1


def feature_spike_exponents(alpha: float, n_terms: int) -> list[float]:
    """Return the margin kα + 1 − k/2 − 1/2 of spike k = 1..n_terms over the √N bulk."""
    return [k * alpha + 0.5 - k / 2 for k in range(1, n_terms + 1)]
