"""Random-feature regression data: one draw per (seed, s), nested features for every width N.

latent x ~ N(0, Λ), Λ = diag(k^-s), k = 1..D; teacher y = w*ᵀx + σε, w* ~ N(0, I_D);
features z = F x with F the first N rows of F_max ∈ R^{N_max×D}, F_ij ~ N(0, 1/D).
The task trains on the sufficient statistics Σ̂ = ZᵀZ/n, b̂ = Zᵀy/n, ĉ = yᵀy/n and tests on the
population risk with Σ = FΛFᵀ, b = FΛw*, c = w*ᵀΛw* + σ².
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from tasks.base import TensorDataModule


def draw_problem(seed: int, s: float, latent_dim: int, n_train: int, max_features: int,
                 n_outputs: int, noise_std: float) -> dict[str, torch.Tensor]:
    """Return the float64 statistics of one draw: sigma_hat, b_hat, c_hat, sigma, b, c.

    The random draws (F_max, w*, G, ε with x = Λ^{1/2} g) come from `seed` alone, so every s, N
    and optimizer sees the same draw.
    """
    gen = torch.Generator().manual_seed(int(seed))
    f64 = torch.float64
    d, n = latent_dim, n_train
    features = torch.randn(max_features, d, generator=gen, dtype=f64) / d**0.5
    w_star = torch.randn(d, n_outputs, generator=gen, dtype=f64)
    gauss = torch.randn(n, d, generator=gen, dtype=f64)
    noise = torch.randn(n, n_outputs, generator=gen, dtype=f64)
    lam = torch.arange(1, d + 1, dtype=f64).pow(-s)
    x = gauss * lam.sqrt()
    y = x @ w_star + noise_std * noise
    z = x @ features.T
    del gauss, x
    f_lam = features * lam
    return {
        "sigma_hat": z.T @ z / n,
        "b_hat": z.T @ y / n,
        "c_hat": (y * y).sum(0) / n,
        "sigma": f_lam @ features.T,
        "b": f_lam @ w_star,
        "c": (w_star * w_star * lam[:, None]).sum(0) + noise_std**2,
    }


def restrict(problem: dict[str, torch.Tensor], n_features: int) -> dict[str, torch.Tensor]:
    """Return the statistics of the first `n_features` features (nested widths of one draw)."""
    n = n_features
    return {"sigma_hat": problem["sigma_hat"][:n, :n].contiguous(),
            "sigma": problem["sigma"][:n, :n].contiguous(),
            "b_hat": problem["b_hat"][:n].contiguous(), "b": problem["b"][:n].contiguous(),
            "c_hat": problem["c_hat"], "c": problem["c"]}


class OptimizerScalingData(TensorDataModule):
    """The cached draw for (seed, s, D, n, N_max, m, σ); serves Σ̂, b̂ of the first N features."""

    def generating_config(self) -> dict:
        c = self.cfg
        return {"s": c.s, "latent_dim": c.latent_dim, "n_train": c.n_train,
                "max_features": c.max_features, "n_outputs": c.n_outputs,
                "noise_std": c.noise_std}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        return draw_problem(self.seed, c.s, c.latent_dim, c.n_train, c.max_features,
                            c.n_outputs, c.noise_std)

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.problem = restrict(tensors, self.cfg.n_features)
        if self.cfg.population:
            p = self.problem
            p["sigma_hat"], p["b_hat"], p["c_hat"] = p["sigma"], p["b"], p["c"]

    def train_dataloader(self) -> DataLoader:
        batch = (self.problem["sigma_hat"], self.problem["b_hat"])
        return DataLoader(RepeatedBatch(batch, self.cfg.steps), batch_size=None, shuffle=False)
