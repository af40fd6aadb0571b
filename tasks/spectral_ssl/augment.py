"""Augmentations of the digit images, in torch (no torchvision), applied before the cue is drawn.

Small shifts (zero fill), random erasing of a rectangle of the digit, Gaussian pixel noise. The
spurious cue is rendered afterwards (tasks/spectral_ssl/benchmark.py), so no augmentation ever
removes or covers it: the shortcut survives augmentation as in the paper's benchmarks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.spectral_ssl.benchmark import SIDE


def random_shift(images: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Return each (n, 64) image translated by a uniform (dy, dx) ∈ [−s, s]², zeros shifted in."""
    if max_shift == 0:
        return images
    n, s = images.shape[0], max_shift
    padded = F.pad(images.view(n, SIDE, SIDE), (s, s, s, s))
    off = torch.randint(0, 2 * s + 1, (n, 2), device=images.device)
    grid = torch.arange(SIDE, device=images.device)
    rows = (off[:, 0:1] + grid).unsqueeze(2)  # (n, 8, 1)
    cols = (off[:, 1:2] + grid).unsqueeze(1)  # (n, 1, 8)
    batch = torch.arange(n, device=images.device).view(n, 1, 1)
    return padded[batch, rows, cols].reshape(n, SIDE * SIDE)


def random_erase(images: torch.Tensor, prob: float, max_size: int) -> torch.Tensor:
    """Return the images with, w.p. `prob` each, a random h×w rectangle (1 ≤ h, w ≤ max_size)
    set to 0."""
    if prob == 0:
        return images
    n, dev = images.shape[0], images.device
    h = torch.randint(1, max_size + 1, (n, 1, 1), device=dev)
    w = torch.randint(1, max_size + 1, (n, 1, 1), device=dev)
    top = (torch.rand(n, 1, 1, device=dev) * (SIDE - h + 1)).floor()
    left = (torch.rand(n, 1, 1, device=dev) * (SIDE - w + 1)).floor()
    grid = torch.arange(SIDE, device=dev)
    r, c = grid.view(1, SIDE, 1), grid.view(1, 1, SIDE)
    box = (r >= top) & (r < top + h) & (c >= left) & (c < left + w)
    box = box & (torch.rand(n, 1, 1, device=dev) < prob)
    return images.masked_fill(box.reshape(n, SIDE * SIDE), 0.0)


def augment(images: torch.Tensor, max_shift: int, erase_prob: float, erase_max: int,
            noise_std: float) -> torch.Tensor:
    """Return one random view of each digit: shift, erase, then add N(0, noise_std²) noise."""
    view = random_erase(random_shift(images, max_shift), erase_prob, erase_max)
    if noise_std > 0:
        view = view + noise_std * torch.randn_like(view)
    return view
