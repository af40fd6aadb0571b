"""FixMatch augmentations for small images, batched in torch on the images' device.

Images are (n, C, H, W) in raw pixel space [0, 1] (background 0). Weak: a random shift of up to
±1 pixel per axis (zero fill). Strong: shift, intensity jitter x ← c·x + d (c ~ U[0.6, 1.4],
d ~ U[−0.2, 0.2]), Gaussian noise (σ = 0.1), then a 3×3 cutout (zeroed square).
"""

from __future__ import annotations

import functools

import torch

MAX_SHIFT = 1
CONTRAST = (0.6, 1.4)
BRIGHTNESS = 0.2
NOISE_STD = 0.1
CUTOUT = 3


@functools.lru_cache(maxsize=16)
def _shift_table(h: int, w: int, s: int, device: str) -> torch.Tensor:
    """Return the (2s+1)², H·W) flat indices into the (H+2s)×(W+2s) padded image that each
    shift (dy, dx) reads."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rows = [(ys + oy) * (w + 2 * s) + (xs + ox)
            for oy in range(2 * s + 1) for ox in range(2 * s + 1)]
    return torch.stack([r.reshape(-1) for r in rows]).to(device)


def random_shift(x: torch.Tensor, max_shift: int = MAX_SHIFT) -> torch.Tensor:
    """Return x shifted by an independent integer (dy, dx) ∈ [−s, s]² per image, zero fill."""
    n, c, h, w = x.shape
    s = max_shift
    padded = torch.nn.functional.pad(x, (s, s, s, s)).reshape(n, c, -1)
    table = _shift_table(h, w, s, str(x.device))
    pick = torch.randint(0, table.shape[0], (n,), device=x.device)
    index = table[pick][:, None, :].expand(n, c, h * w)
    return torch.gather(padded, 2, index).reshape(n, c, h, w)


def intensity_jitter(x: torch.Tensor) -> torch.Tensor:
    """Return c·x + d with c ~ U[0.6, 1.4], d ~ U[−0.2, 0.2] per image."""
    n = x.shape[0]
    c = torch.empty(n, 1, 1, 1, device=x.device).uniform_(*CONTRAST)
    d = torch.empty(n, 1, 1, 1, device=x.device).uniform_(-BRIGHTNESS, BRIGHTNESS)
    return c * x + d


def cutout(x: torch.Tensor, size: int = CUTOUT) -> torch.Tensor:
    """Return x with a size×size square (centre uniform over the pixels, clipped) set to 0."""
    n, _, h, w = x.shape
    cy = torch.randint(0, h, (n,), device=x.device)[:, None, None, None]
    cx = torch.randint(0, w, (n,), device=x.device)[:, None, None, None]
    ys = torch.arange(h, device=x.device)[None, None, :, None]
    xs = torch.arange(w, device=x.device)[None, None, None, :]
    half = size // 2
    inside = ((ys - cy).abs() <= half) & ((xs - cx).abs() <= half)
    return x.masked_fill(inside, 0.0)


def weak(x: torch.Tensor) -> torch.Tensor:
    """Return the weak view: a ±1 pixel random shift."""
    return random_shift(x)


def strong(x: torch.Tensor) -> torch.Tensor:
    """Return the strong view: shift, intensity jitter, Gaussian noise, 3×3 cutout."""
    x = intensity_jitter(random_shift(x))
    x = x + NOISE_STD * torch.randn_like(x)
    return cutout(x)
