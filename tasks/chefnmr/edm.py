"""EDM preconditioning, training noise, augmentation and the losses (pure torch functions).

With x = x0 + σε (ε ~ N(0, I)) and σ_d = `sigma_data`:
  c_in = 1/√(σ² + σ_d²), c_skip = σ_d²/(σ² + σ_d²), c_out = σσ_d/√(σ² + σ_d²), c_noise = ¼·log σ;
  D(x; σ) = c_skip·x + c_out·F(c_in·x, c_noise)  (the denoised estimate);
  the network target F* = c_σ·x0 + d_σ·ε with c_σ = σ/(σ_d√(σ² + σ_d²)), d_σ = −σ_d/√(σ² + σ_d²),
  i.e. F* = (x0 − c_skip·x)/c_out, so D = x0 exactly when F = F*, and
  |F − F*|² = λ(σ)·|D − x0|² with λ = 1/c_out² (the EDM loss weight).
Training noise: σ = σ_d·exp(P_mean + P_std·n), n ~ N(0, 1), P_mean = −1.2, P_std = 1.3.
"""

from __future__ import annotations

import math

import torch

P_MEAN, P_STD = -1.2, 1.3
LDDT_THRESHOLDS = (0.5, 1.0, 2.0, 4.0)
LDDT_CUTOFF = 15.0
# 1 − ¼ Σ_t sigmoid(t): the smooth-LDDT loss of identical coordinates (its minimum, not 0)
SMOOTH_LDDT_FLOOR = 1.0 - sum(1.0 / (1.0 + math.exp(-t)) for t in LDDT_THRESHOLDS) / 4.0


def sigma_data(coords: torch.Tensor, mask: torch.Tensor) -> float:
    """Return σ_d = sqrt(mean over valid atoms and the 3 axes of (x − x̄)²), each conformer
    centred on its own valid atoms; coords (..., A, 3), mask (..., A) bool."""
    m = mask.to(coords.dtype).unsqueeze(-1)
    centre = (coords * m).sum(-2, keepdim=True) / m.sum(-2, keepdim=True).clamp(min=1)
    sq = (((coords - centre) * m) ** 2).sum()
    return float(torch.sqrt(sq / (3.0 * m.sum())))


def edm_coefficients(sigma: torch.Tensor, sd: float) -> dict[str, torch.Tensor]:
    """Return c_in, c_skip, c_out, c_noise, c_sigma, d_sigma and weight = 1/c_out² at `sigma`."""
    s2 = sigma**2 + sd**2
    root = torch.sqrt(s2)
    c_out = sigma * sd / root
    return {"c_in": 1.0 / root, "c_skip": sd**2 / s2, "c_out": c_out,
            "c_noise": 0.25 * torch.log(sigma), "c_sigma": sigma / (sd * root),
            "d_sigma": -sd / root, "weight": 1.0 / c_out**2}


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(v.shape + (1,) * (like.dim() - v.dim()))


def network_target(x0: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, sd: float
                   ) -> torch.Tensor:
    """Return F* = c_σ·x0 + d_σ·ε (per-sample σ of shape (B,), x0 and ε (B, A, 3))."""
    c = edm_coefficients(sigma, sd)
    return _bcast(c["c_sigma"], x0) * x0 + _bcast(c["d_sigma"], x0) * eps


def denoise(x: torch.Tensor, net_out: torch.Tensor, sigma: torch.Tensor, sd: float
            ) -> torch.Tensor:
    """Return D = c_skip·x + c_out·F for the noisy x, the network output F and σ (B,)."""
    c = edm_coefficients(sigma, sd)
    return _bcast(c["c_skip"], x) * x + _bcast(c["c_out"], x) * net_out


def training_sigmas(n: int, sd: float, generator: torch.Generator) -> torch.Tensor:
    """Return n noise levels σ = σ_d·exp(−1.2 + 1.3·N(0, 1)) drawn with `generator`."""
    return sd * torch.exp(P_MEAN + P_STD * torch.randn(n, generator=generator))


def random_rotations(n: int, generator: torch.Generator, dtype: torch.dtype = torch.float32
                     ) -> torch.Tensor:
    """Return n rotation matrices (n, 3, 3), Haar-uniform on SO(3): Q of the QR factorisation
    of a Gaussian matrix with the signs of diag(R) folded in, a column flipped when det = −1."""
    g = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    flip = torch.linalg.det(q) < 0
    q[flip, :, 0] = -q[flip, :, 0]
    return q.to(dtype)


def augment(x0: torch.Tensor, mask: torch.Tensor, generator: torch.Generator,
            translation_std: float = 1.0) -> torch.Tensor:
    """Return x0 (B, A, 3) centred on its valid atoms, rotated by a random rotation and shifted
    by a random N(0, translation_std²) translation per molecule; padded atoms are set to 0."""
    m = mask.to(x0.dtype).unsqueeze(-1)
    centre = (x0 * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
    rot = random_rotations(x0.shape[0], generator, x0.dtype)
    shift = translation_std * torch.randn(x0.shape[0], 1, 3, generator=generator, dtype=x0.dtype)
    return (((x0 - centre) @ rot.transpose(1, 2)) + shift) * m


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Return mean over molecules of Σ_valid atoms |pred − target|² / (3·#valid atoms)."""
    m = mask.to(pred.dtype)
    per = ((pred - target) ** 2).sum(-1)
    return ((per * m).sum(-1) / (3.0 * m.sum(-1).clamp(min=1))).mean()


def smooth_lddt_loss(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor,
                     cutoff: float = LDDT_CUTOFF) -> torch.Tensor:
    """Return mean over molecules of 1 − mean_{pairs} ¼ Σ_{t ∈ {0.5,1,2,4} Å} sigmoid(t − |d_pred −
    d_true|), over pairs i ≠ j of valid atoms with d_true < `cutoff` (all pairs at our sizes).
    Its minimum, at pred = true up to a rigid motion, is SMOOTH_LDDT_FLOOR ≈ 0.1959, not 0."""
    d_true = torch.cdist(true, true)
    d_pred = torch.cdist(pred, pred)
    m = mask.to(pred.dtype)
    eye = torch.eye(pred.shape[1], dtype=pred.dtype, device=pred.device)
    pairs = m.unsqueeze(-1) * m.unsqueeze(-2) * (1 - eye) * (d_true < cutoff).to(pred.dtype)
    diff = (d_true - d_pred).abs()
    score = sum(torch.sigmoid(t - diff) for t in LDDT_THRESHOLDS) / 4.0
    per = (score * pairs).sum((-1, -2)) / pairs.sum((-1, -2)).clamp(min=1)
    return (1.0 - per).mean()
