"""Order parameters of the E activity and the regime classification (thresholds in Config).

All functions take the E rates r = φ_E(x_E) after burn-in as (frames, *grid) tensors, where
grid is (side,) on the ring or (side, side) on the torus.
"""

from __future__ import annotations

import math

import torch

BOX = 11  # the spec's 11 (×11) neighbourhood


def box_sum(r: torch.Tensor, dim: int, width: int = BOX) -> torch.Tensor:
    """Return the wrapped box sum Σ_{|Δ|≤w//2 per axis} r(i+Δ) over the last `dim` axes."""
    half = width // 2
    out = r
    for axis in range(r.dim() - dim, r.dim()):
        acc = torch.zeros_like(out)
        for s in range(-half, half + 1):
            acc = acc + torch.roll(out, shifts=s, dims=axis)
        out = acc
    return out


def _flat(r: torch.Tensor, dim: int) -> torch.Tensor:
    """Return r as (frames, units)."""
    return r.reshape(r.shape[0], -1) if dim == 2 else r


def global_sync(r: torch.Tensor, dim: int) -> float:
    """Return mean_t |Σ_i r_i| / Σ_i |r_i|."""
    f = _flat(r, dim)
    return float((f.sum(1).abs() / f.abs().sum(1).clamp_min(1e-12)).mean())


def local_sync(r: torch.Tensor, dim: int, width: int = BOX) -> float:
    """Return mean_{t,i} |Σ_box r| / Σ_box |r| (wrapped box of `width` per axis)."""
    num = box_sum(r, dim, width).abs()
    den = box_sum(r.abs(), dim, width).clamp_min(1e-12)
    return float((num / den).mean())


def moran_i(r: torch.Tensor, dim: int, width: int = BOX) -> float:
    """Return Moran's I with box weights (self excluded), averaged over frames.

    I_t = Σ_i z_i Σ_{j∈box(i), j≠i} z_j / ((|box| − 1)·Σ_i z_i²), z = r_t − mean_i r_t.
    """
    axes = tuple(range(1, 1 + dim))
    z = r - r.mean(dim=axes, keepdim=True)
    neigh = box_sum(z, dim, width) - z
    num = (z * neigh).sum(dim=axes)
    den = (width**dim - 1) * (z * z).sum(dim=axes)
    ok = den > 1e-12
    if not bool(ok.any()):
        return 0.0
    return float((num[ok] / den[ok]).mean())


def temporal_power(r: torch.Tensor, dim: int) -> torch.Tensor:
    """Return P(f) = mean_i |FFT_t(r_i − mean_t r_i)|² for f = 0..frames//2."""
    f = _flat(r, dim).to(torch.float64)
    f = f - f.mean(0, keepdim=True)
    return torch.fft.rfft(f, dim=0).abs().pow(2).mean(1)


def dominant_frequency(r: torch.Tensor, dim: int, frame_dt: float,
                       tau: float) -> tuple[float, float]:
    """Return (f*, oscillation index): the peak of P(f) (f > 0, units of 1/τ, parabolic
    interpolation between bins) and the power within ±1 bin of it over the total (f > 0)."""
    p = temporal_power(r, dim)
    n_frames = r.shape[0]
    if p.numel() < 3 or float(p[1:].sum()) <= 0:
        return 0.0, 0.0
    k = int(torch.argmax(p[1:])) + 1
    shift = 0.0
    if 1 < k < p.numel() - 1:
        a, b, c = (float(v) for v in p[k - 1:k + 2])
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom != 0 else 0.0
    freq = (k + shift) / (n_frames * frame_dt) * tau
    band = float(p[max(k - 1, 1):k + 2].sum())
    return freq, band / float(p[1:].sum())


def dominant_wavevector(r: torch.Tensor, dim: int) -> tuple[list[int], float]:
    """Return (n*, |n*|): the peak (n ≠ 0) of the time-averaged spatial power |FFT(r_t)|²."""
    axes = tuple(range(1, 1 + dim))
    z = r.to(torch.float64)
    z = z - z.mean(dim=axes, keepdim=True)
    power = torch.fft.fftn(z, dim=axes).abs().pow(2).mean(0)
    flat = power.reshape(-1).clone()
    flat[0] = -1.0
    idx = int(torch.argmax(flat))
    side = r.shape[1]
    coords = list(torch.unravel_index(torch.tensor(idx), power.shape))
    vec = [int(c) if int(c) <= side // 2 else int(c) - side for c in coords]
    return vec, float(math.sqrt(sum(v * v for v in vec)))


def lag_correlation(r: torch.Tensor, dim: int, lag: int) -> float:
    """Return the mean Pearson correlation between the spatial patterns at t and t + lag."""
    f = _flat(r, dim).to(torch.float64)
    if lag >= f.shape[0]:
        return float("nan")
    f = f - f.mean(1, keepdim=True)
    a, b = f[:-lag], f[lag:]
    den = (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
    return float(((a * b).sum(1) / den).mean())


def order_parameters(r: torch.Tensor, dim: int, frame_dt: float, tau: float) -> dict:
    """Return every order parameter of the E rates r (frames, *grid)."""
    f = _flat(r, dim).to(torch.float64)
    freq, osc_index = dominant_frequency(r, dim, frame_dt, tau)
    vec, wavenumber = dominant_wavevector(r, dim)
    lag = max(1, int(round(tau / frame_dt)))
    return {
        "mean_activity": float(f.abs().mean()),
        "global_sync": global_sync(r, dim),
        "local_sync": local_sync(r, dim),
        "moran_i": moran_i(r, dim),
        "temporal_std": float(f.std(0).mean()),
        "population_std": float(f.mean(1).std()),
        "lag_correlation": lag_correlation(r, dim, lag),
        "dominant_frequency": freq,
        "oscillation_index": osc_index,
        "dominant_wave_vector": vec,
        "dominant_wavenumber": wavenumber,
    }


def classify(op: dict, thr: dict[str, float]) -> str:
    """Return the regime from the order parameters and the frozen thresholds.

    activity < thr_activity → stable; global sync > thr_global_sync → global_osc when the
    population mean fluctuates (std > thr_osc_std) else global_sync; local sync > thr_local_sync
    and Moran's I > thr_moran → bump when static (temporal std < thr_static) else wave;
    otherwise chaos when the units fluctuate (temporal std ≥ thr_static), else stable.
    """
    if op["mean_activity"] < thr["thr_activity"]:
        return "stable"
    if op["global_sync"] > thr["thr_global_sync"]:
        return "global_osc" if op["population_std"] > thr["thr_osc_std"] else "global_sync"
    if op["local_sync"] > thr["thr_local_sync"] and op["moran_i"] > thr["thr_moran"]:
        return "bump" if op["temporal_std"] < thr["thr_static"] else "wave"
    return "chaos" if op["temporal_std"] >= thr["thr_static"] else "stable"


def e_rates(x: torch.Tensor, n_exc: int, side: int, dim: int) -> torch.Tensor:
    """Return tanh(x_E) reshaped to (frames, *grid)."""
    r = torch.tanh(x[:, :n_exc].to(torch.float64))
    return r.reshape(r.shape[0], side, side) if dim == 2 else r
