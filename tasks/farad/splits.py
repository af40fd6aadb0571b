"""Long-tailed class counts and the per-class split of the digits (pure functions).

N_k = ⌊N_1 · γ^{−(k−1)/(C−1)}⌋ for γ ≥ 1 (class 1 largest); γ < 1 gives the reversed profile
(class C largest, N_C = N_1), so γ_u = 1/10 is the "reversed" unlabelled set.
"""

from __future__ import annotations

import math

import numpy as np

N_CLASSES = 10
# images per class in scikit-learn's bundled load_digits (1,797 images, 8×8, values 0..16)
DIGITS_CLASS_COUNTS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)


def longtail_counts(n_max: int, gamma: float, n_classes: int = N_CLASSES) -> list[int]:
    """Return [N_1..N_C] with N_k = ⌊n_max · γ^{−(k−1)/(C−1)}⌋ (γ ≥ 1), reversed for γ < 1."""
    ratio = gamma if gamma >= 1 else 1.0 / gamma
    counts = [math.floor(n_max * ratio ** (-k / (n_classes - 1)) + 1e-9) for k in range(n_classes)]
    return counts if gamma >= 1 else counts[::-1]


def tail_classes(labeled_counts: list[int], k: int = 3) -> list[int]:
    """Return the `k` classes with the fewest labelled images (ties: the later class index)."""
    order = sorted(range(len(labeled_counts)), key=lambda c: (labeled_counts[c], -c))
    return sorted(order[:k])


def split_indices(labels: np.ndarray, seed: int, test_per_class: int, labeled: list[int],
                  unlabeled: list[int]) -> dict[str, np.ndarray]:
    """Return index arrays {test, labeled, unlabeled}: per class a seeded permutation whose first
    `test_per_class` go to test, the next N_k to the labelled set, the next M_k to the
    unlabelled set (so the labelled set of a seed is the same for every γ_u)."""
    rng = np.random.default_rng(int(seed))
    parts: dict[str, list[np.ndarray]] = {"test": [], "labeled": [], "unlabeled": []}
    for c in range(len(labeled)):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(idx.size)]
        n_l, n_u = labeled[c], unlabeled[c]
        if test_per_class + n_l + n_u > idx.size:
            raise ValueError(f"class {c} has {idx.size} images, the split needs "
                             f"{test_per_class + n_l + n_u}")
        parts["test"].append(idx[:test_per_class])
        parts["labeled"].append(idx[test_per_class:test_per_class + n_l])
        parts["unlabeled"].append(idx[test_per_class + n_l:test_per_class + n_l + n_u])
    return {k: np.concatenate(v).astype(np.int64) for k, v in parts.items()}
