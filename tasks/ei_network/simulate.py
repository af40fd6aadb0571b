"""Rate dynamics τ dx/dt = −x + Jφ(x) + I_ext + σ_n ξ(t), exponential Euler (exact leak).

x ← e^{−h}x + (1 − e^{−h})(Jφ(x) + I_ext) + σ_n √h ξ, h = dt/τ, with φ_E = tanh and
φ_I(x) = s·tanh(x/s) (s = inh_gain_scale); x(0) ~ U(init_low, init_high); I_ext = 0 (the
official code's default). Frames are recorded every `record_every` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Recording:
    """Recorded states x (frames × N, float32), frame times, and whether the run diverged."""

    x: torch.Tensor
    times: torch.Tensor
    diverged: bool
    diverged_at: float | None


def activation(x: torch.Tensor, n_exc: int, inh_gain_scale: float) -> torch.Tensor:
    """Return φ(x): tanh on the first n_exc units, s·tanh(x/s) on the rest."""
    out = torch.empty_like(x)
    out[..., :n_exc] = torch.tanh(x[..., :n_exc])
    out[..., n_exc:] = inh_gain_scale * torch.tanh(x[..., n_exc:] / inh_gain_scale)
    return out


def simulate(j: torch.Tensor, n_exc: int, *, tau: float, dt: float, t_total: float,
             record_every: int, noise_std: float, inh_gain_scale: float, init_low: float,
             init_high: float, seed: int, ext_input: float = 0.0,
             chunk: int = 500) -> Recording:
    """Return the Recording of one simulation of the network J (rows = postsynaptic).

    Stops early (diverged=True) as soon as a recorded state holds NaN or Inf.
    """
    gen = torch.Generator().manual_seed(int(seed))
    n = j.shape[0]
    dtype = j.dtype
    h = dt / tau
    leak, gain, noise_amp = math.exp(-h), -math.expm1(-h), noise_std * math.sqrt(h)
    n_steps = int(round(t_total / dt))
    x = init_low + (init_high - init_low) * torch.rand(n, generator=gen, dtype=torch.float64)
    x = x.to(dtype)
    frames, times = [], []
    diverged_at = None
    step = 0
    while step < n_steps:
        todo = min(chunk, n_steps - step)
        noise = noise_amp * torch.randn(todo, n, generator=gen, dtype=torch.float64).to(dtype)
        for s in range(todo):
            if step % record_every == 0:
                frames.append(x.clone())
                times.append(step * dt)
            drive = torch.mv(j, activation(x, n_exc, inh_gain_scale))
            if ext_input:
                drive = drive + ext_input
            x = leak * x + gain * drive + noise[s]
            step += 1
        if not bool(torch.isfinite(x).all()):
            diverged_at = step * dt
            break
    if diverged_at is None and step % record_every == 0:
        frames.append(x.clone())
        times.append(step * dt)
    rec = torch.stack(frames) if frames else torch.zeros(0, n, dtype=dtype)
    bad = not bool(torch.isfinite(rec).all()) or diverged_at is not None
    return Recording(x=rec, times=torch.tensor(times, dtype=torch.float64), diverged=bad,
                     diverged_at=diverged_at)
