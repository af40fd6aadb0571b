"""The "spurious digits" benchmark: sklearn's 8x8 digits with a constant cue tied to the class.

Core label y = digit; spurious attribute a ∈ {0..n_attr−1} with g(y) = y mod n_attr. In the
training split a = g(y) with probability ρ, otherwise uniform over the other n_attr − 1 values.
The cue is rendered on the fly (after augmentation, so it always survives it): `patch` paints a
bright 2x2 block at an attribute-specific position, `colour` appends a second channel holding the
constant (a + 1)/n_attr. Test images are rendered under every attribute value, so each (y, a)
group holds all test images of class y and a is independent of y.
"""

from __future__ import annotations

import numpy as np
import torch

N_CLASSES = 10
SIDE = 8
PIXELS = SIDE * SIDE
PATCH = 2
PATCH_VALUE = 1.0
# top-left corners of the 2x2 blocks: the 12 border blocks clockwise, then the 4 inner ones
PATCH_CORNERS = ((0, 0), (0, 2), (0, 4), (0, 6), (2, 6), (4, 6), (6, 6), (6, 4), (6, 2),
                 (6, 0), (4, 0), (2, 0), (2, 2), (2, 4), (4, 4), (4, 2))


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Return sklearn's bundled digits as (images (1797, 64) float32 in [0, 1], labels int64)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)


def spurious_map(y: torch.Tensor, n_attr: int) -> torch.Tensor:
    """Return g(y) = y mod n_attr, the attribute a class is tied to in training."""
    return torch.remainder(y, n_attr)


def stratified_split(y: np.ndarray, test_frac: float, gen: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Return (train indices, test indices): round(test_frac·n_c) random images of each class c."""
    train, test = [], []
    for c in np.unique(y):
        idx = gen.permutation(np.flatnonzero(y == c))
        k = int(round(test_frac * idx.size))
        test.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def draw_attributes(y: np.ndarray, rho: float, n_attr: int, gen: np.random.Generator
                    ) -> np.ndarray:
    """Return a with a = g(y) w.p. rho, else uniform over the n_attr − 1 other values."""
    aligned = y % n_attr
    keep = gen.random(y.size) < rho
    other = (aligned + gen.integers(1, n_attr, size=y.size)) % n_attr  # uniform over a ≠ g(y)
    return np.where(keep, aligned, other).astype(np.int64)


def half_split(y: np.ndarray, gen: np.random.Generator) -> np.ndarray:
    """Return a boolean mask selecting ⌊n_c/2⌋ random images of each class (the probe-train half)."""
    mask = np.zeros(y.size, dtype=bool)
    for c in np.unique(y):
        idx = gen.permutation(np.flatnonzero(y == c))
        mask[idx[: idx.size // 2]] = True
    return mask


def input_dim(kind: str) -> int:
    """Return the network input size: 64 for `patch`, 128 (two channels) for `colour`."""
    return PIXELS if kind == "patch" else 2 * PIXELS


def patch_masks(n_attr: int) -> torch.Tensor:
    """Return (n_attr, 64) float masks, row a = 1 on attribute a's 2x2 block."""
    masks = torch.zeros(n_attr, SIDE, SIDE)
    for a, (r, c) in enumerate(PATCH_CORNERS[:n_attr]):
        masks[a, r:r + PATCH, c:c + PATCH] = 1.0
    return masks.reshape(n_attr, PIXELS)


def colour_values(n_attr: int) -> torch.Tensor:
    """Return the (n_attr,) constants of the second channel, (a + 1)/n_attr."""
    return (torch.arange(n_attr, dtype=torch.float32) + 1.0) / n_attr


def render(images: torch.Tensor, a: torch.Tensor, kind: str, masks: torch.Tensor,
           colours: torch.Tensor) -> torch.Tensor:
    """Return network inputs for digit images (n, 64) under attributes a (n,).

    patch: x = img·(1 − m_a) + PATCH_VALUE·m_a; colour: [img, colours[a]·1₆₄] (n, 128).
    """
    if kind == "patch":
        m = masks[a]
        return images * (1.0 - m) + PATCH_VALUE * m
    channel = colours[a].unsqueeze(1).expand(-1, images.shape[1])
    return torch.cat([images, channel], dim=1)


def render_all(images: torch.Tensor, y: torch.Tensor, kind: str, masks: torch.Tensor,
               colours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                               torch.Tensor]:
    """Return (x, y, a, image index) with every image rendered under every attribute value
    (attribute-major: rows a·n .. (a+1)·n − 1 hold attribute a)."""
    n, n_attr = images.shape[0], masks.shape[0]
    a = torch.arange(n_attr, device=images.device).repeat_interleave(n)
    idx = torch.arange(n, device=images.device).repeat(n_attr)
    return render(images[idx], a, kind, masks, colours), y[idx], a, idx
