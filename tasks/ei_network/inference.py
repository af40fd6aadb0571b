"""Inference of the connectivity parameters from an activity recording (mode=infer).

Model: the mean kernel of J, E[J_ij] = ḡ_ab·G_{d_ab}(x_i − y_j)/N_b, acting on the rates. Between
two frames Δ = dt·record_every apart the exact-leak solution with a linearly varying input is
x_{t+1} = a·x_t + (1 − a)·u_t, a = e^{−Δ/τ}, so the observed input is
u_t = (x_{t+1} − a·x_t)/(1 − a), and the model predicts û_t = J̄_θ·½(φ(x_t) + φ(x_{t+1})).
J̄_θ is applied by FFT on the E grid (the I grid embedded every q = side_E/side_I points).
"""

from __future__ import annotations

import math

import torch

from tasks.ei_network.lattice import wrapped_gauss_unnorm
from tasks.ei_network.simulate import activation

BLOCKS = ("ee", "ie", "ei", "ii")


def fine_kernel(width: torch.Tensor, side: int, dim: int) -> torch.Tensor:
    """Return G_d on the E grid displacements m/side (a `dim`-D tensor), differentiable in d."""
    delta = torch.arange(side, dtype=torch.float64) / side
    g1 = wrapped_gauss_unnorm(delta, width) / (math.sqrt(2 * math.pi) * width)
    return g1 if dim == 1 else g1[:, None] * g1[None, :]


def mean_field_input(rates: torch.Tensor, gbar: torch.Tensor, widths: torch.Tensor, n_exc: int,
                     side_e: int, side_i: int, dim: int) -> torch.Tensor:
    """Return J̄_θ·r for rates (frames, N), with ḡ, d ordered (ee, ie, ei, ii)."""
    frames = rates.shape[0]
    q = side_e // side_i
    axes = tuple(range(1, 1 + dim))
    grid_e = (side_e,) * dim
    r_e = rates[:, :n_exc].reshape(frames, *grid_e).to(torch.float64)
    r_i = torch.zeros(frames, *grid_e, dtype=torch.float64)
    sub = (slice(None),) + (slice(None, None, q),) * dim
    r_i[sub] = rates[:, n_exc:].reshape(frames, *((side_i,) * dim)).to(torch.float64)
    spec = {"e": torch.fft.fftn(r_e, dim=axes), "i": torch.fft.fftn(r_i, dim=axes)}
    n_pop = {"e": n_exc, "i": rates.shape[1] - n_exc}
    out = {"e": 0, "i": 0}
    for b, blk in enumerate(BLOCKS):
        post, pre = blk[0], blk[1]
        kern = gbar[b] * fine_kernel(widths[b], side_e, dim) / n_pop[pre]
        out[post] = out[post] + spec[pre] * torch.fft.fftn(kern, dim=tuple(range(dim)))
    u_e = torch.fft.ifftn(out["e"], dim=axes).real.reshape(frames, -1)
    u_i = torch.fft.ifftn(out["i"], dim=axes).real[sub].reshape(frames, -1)
    return torch.cat([u_e, u_i], 1)


def observed_input(x: torch.Tensor, frame_dt: float, tau: float,
                   n_exc: int, inh_gain_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (u_obs, φ̄): u_t = (x_{t+1} − a x_t)/(1 − a) and ½(φ(x_t) + φ(x_{t+1}))."""
    x = x.to(torch.float64)
    a = math.exp(-frame_dt / tau)
    u = (x[1:] - a * x[:-1]) / (1 - a)
    phi = activation(x, n_exc, inh_gain_scale)
    return u, 0.5 * (phi[1:] + phi[:-1])


def fit_loss(u_obs: torch.Tensor, u_hat: torch.Tensor, n_exc: int) -> torch.Tensor:
    """Return ½(MSE_E/Var_E + MSE_I/Var_I): the unexplained fraction of the input per population."""
    def part(sl: slice) -> torch.Tensor:
        err = (u_obs[:, sl] - u_hat[:, sl]).pow(2).mean()
        return err / u_obs[:, sl].var().clamp_min(1e-12)
    return 0.5 * (part(slice(None, n_exc)) + part(slice(n_exc, None)))


def alias_split(x: torch.Tensor, q: int, dim: int) -> torch.Tensor:
    """Return the fine-grid spectrum (lead, *grid) as (lead, q^dim, *subgrid): entry l holds
    Y[m + l·side/q] (per axis), the components that alias onto the subsampled frequency m."""
    lead, side = x.shape[0], x.shape[1]
    sub = side // q
    if dim == 1:
        return x.reshape(lead, q, sub)
    return x.reshape(lead, q, sub, q, sub).permute(0, 1, 3, 2, 4).reshape(lead, q * q, sub, sub)


class MeanFieldFit:
    """The fit loss of `fit_loss(u_obs, mean_field_input(φ̄, ...))` from sufficient statistics.

    In Fourier space the prediction at each frequency is a real-weighted sum of feature spectra
    (E: Ŝ_E, Ŝ_I tiled; I: the q^dim E components aliasing onto m, and Ŝ_I), so
    Σ_t |Û − Σ_j w_j F_j|² = Σ_t|Û|² − 2 wᵀRe(h) + wᵀRe(G)w with G = Σ_t F F^H, h = Σ_t Û F^*
    computed once; each evaluation costs four kernel FFTs (Parseval turns it into the MSE).
    """

    def __init__(self, u_obs: torch.Tensor, phi: torch.Tensor, n_exc: int, side_e: int,
                 side_i: int, dim: int) -> None:
        frames = phi.shape[0]
        self.n_exc, self.side_e, self.side_i, self.dim = n_exc, side_e, side_i, dim
        self.q = side_e // side_i
        axes = tuple(range(1, 1 + dim))
        grid_e, grid_i = (side_e,) * dim, (side_i,) * dim
        f64 = torch.float64

        def spec(x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
            return torch.fft.fftn(x.to(f64).reshape(frames, *grid), dim=axes)
        s_e, s_i = spec(phi[:, :n_exc], grid_e), spec(phi[:, n_exc:], grid_i)
        u_e, u_i = spec(u_obs[:, :n_exc], grid_e), spec(u_obs[:, n_exc:], grid_i)
        feats_e = torch.stack([s_e, s_i.repeat(1, *((self.q,) * dim))], 1)
        feats_i = torch.cat([alias_split(s_e, self.q, dim), s_i[:, None]], 1)
        n_i = u_obs.shape[1] - n_exc
        self.stats = {}
        for pop, feats, u, n in (("e", feats_e, u_e, n_exc), ("i", feats_i, u_i, n_i)):
            gram = torch.einsum("tj...,tk...->jk...", feats, feats.conj()).real
            cross = torch.einsum("t...,tj...->j...", u, feats.conj()).real
            part = u_obs[:, n_exc:] if pop == "i" else u_obs[:, :n_exc]
            norm = frames * n * n * part.to(f64).var()
            self.stats[pop] = (u.abs().pow(2).sum(0), cross, gram, norm)
        self.n_pop = {"e": n_exc, "i": n_i}

    def _error(self, pop: str, w: torch.Tensor) -> torch.Tensor:
        uu, cross, gram, norm = self.stats[pop]
        quad = torch.einsum("j...,jk...,k...->...", w, gram, w)
        return (uu - 2 * (w * cross).sum(0) + quad).sum() / norm

    def loss(self, gbar: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """Return ½(MSE_E/Var_E + MSE_I/Var_I) of û = J̄_θ φ̄ against u_obs."""
        dims = tuple(range(self.dim))
        k_hat = {}
        for b, blk in enumerate(BLOCKS):
            kern = gbar[b] * fine_kernel(widths[b], self.side_e, self.dim) / self.n_pop[blk[1]]
            k_hat[blk] = torch.fft.fftn(kern, dim=dims).real   # symmetric kernel: real
        w_e = torch.stack([k_hat["ee"], k_hat["ei"]])
        scale = self.q**self.dim
        w_ie = alias_split(k_hat["ie"][None], self.q, self.dim)[0] / scale
        w_ii = alias_split(k_hat["ii"][None], self.q, self.dim)[0].sum(0, keepdim=True) / scale
        w_i = torch.cat([w_ie, w_ii])
        return 0.5 * (self._error("e", w_e) + self._error("i", w_i))
