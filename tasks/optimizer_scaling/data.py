"""Random-feature regression data: one draw per (seed, s), nested features for every width N.

latent x ~ N(0, Λ), Λ = diag(k^-s), k = 1..D; teacher y = w*ᵀx + σε, w* ~ N(0, I_D);
features z = F x with F the first N rows of F_max ∈ R^{N_max×D}, F_ij ~ N(0, 1/D).
The task trains on the sufficient statistics Σ̂ = ZᵀZ/n, b̂ = Zᵀy/n, ĉ = yᵀy/n and tests on the
population risk with Σ = FΛFᵀ, b = FΛw*, c = w*ᵀΛw* + σ². A validation split of n_val further
samples of the same draw (made after the training samples, so the training set does not depend
on n_val) gives Σ̂_val, b̂_val, ĉ_val: the empirical risk on which Adam's and matrix_sign's
learning rate is chosen.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from tasks.base import TensorDataModule


def sample_statistics(x: torch.Tensor, y: torch.Tensor, features: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (ZᵀZ/n, Zᵀy/n, mean_i y_i² per output) with Z = xFᵀ: the empirical risk's terms."""
    z = x @ features.T
    n = x.shape[0]
    return z.T @ z / n, z.T @ y / n, (y * y).sum(0) / n


def draw_problem(seed: int, s: float, latent_dim: int, n_train: int, max_features: int,
                 n_outputs: int, noise_std: float, n_val: int) -> dict[str, torch.Tensor]:
    """Return the float64 statistics of one draw: sigma_hat, b_hat, c_hat (training samples),
    sigma_val, b_val, c_val (validation samples), sigma, b, c (population).

    The random draws (F_max, w*, G, ε with x = Λ^{1/2} g, then the validation G, ε) come from
    `seed` alone, in that order, so every s, N and optimizer sees the same draw and the training
    statistics do not depend on n_val.
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
    del gauss
    sigma_hat, b_hat, c_hat = sample_statistics(x, x @ w_star + noise_std * noise, features)
    del x
    x_val = torch.randn(n_val, d, generator=gen, dtype=f64) * lam.sqrt()
    noise_val = torch.randn(n_val, n_outputs, generator=gen, dtype=f64)
    sigma_val, b_val, c_val = sample_statistics(x_val, x_val @ w_star + noise_std * noise_val,
                                                features)
    del x_val
    f_lam = features * lam
    return {
        "sigma_hat": sigma_hat, "b_hat": b_hat, "c_hat": c_hat,
        "sigma_val": sigma_val, "b_val": b_val, "c_val": c_val,
        "sigma": f_lam @ features.T,
        "b": f_lam @ w_star,
        "c": (w_star * w_star * lam[:, None]).sum(0) + noise_std**2,
    }


def restrict(problem: dict[str, torch.Tensor], n_features: int) -> dict[str, torch.Tensor]:
    """Return the statistics of the first `n_features` features (nested widths of one draw)."""
    n = n_features
    out = {}
    for split in ("hat", "val"):
        out[f"sigma_{split}"] = problem[f"sigma_{split}"][:n, :n].contiguous()
        out[f"b_{split}"] = problem[f"b_{split}"][:n].contiguous()
        out[f"c_{split}"] = problem[f"c_{split}"]
    out.update(sigma=problem["sigma"][:n, :n].contiguous(), b=problem["b"][:n].contiguous(),
               c=problem["c"])
    return out


class OptimizerScalingData(TensorDataModule):
    """The cached draw for (seed, s, D, n, n_val, N_max, m, σ); serves Σ̂, b̂ of the first N
    features."""

    def generating_config(self) -> dict:
        c = self.cfg
        return {"s": c.s, "latent_dim": c.latent_dim, "n_train": c.n_train, "n_val": c.n_val,
                "max_features": c.max_features, "n_outputs": c.n_outputs,
                "noise_std": c.noise_std}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        return draw_problem(self.seed, c.s, c.latent_dim, c.n_train, c.max_features,
                            c.n_outputs, c.noise_std, c.n_val)

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.problem = restrict(tensors, self.cfg.n_features)
        if self.cfg.population:  # infinite data: training and validation risk are the population's
            p = self.problem
            for split in ("hat", "val"):
                p[f"sigma_{split}"], p[f"b_{split}"], p[f"c_{split}"] = p["sigma"], p["b"], p["c"]

    def train_dataloader(self) -> DataLoader:
        batch = (self.problem["sigma_hat"], self.problem["b_hat"])
        return DataLoader(RepeatedBatch(batch, self.cfg.steps), batch_size=None, shuffle=False)
