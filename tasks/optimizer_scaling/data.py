"""Random-feature regression data: one draw per (seed, s), nested features for every width N.

latent x ~ N(0, Λ), Λ = diag(k^-s), k = 1..D; teacher y = w*ᵀx + σε, w* ~ N(0, I_D);
features z = F x with F the first N rows of F_max ∈ R^{N_max×D}, F_ij ~ N(0, 1/D).
The task trains on the sufficient statistics Σ̂ = ZᵀZ/n, b̂ = Zᵀy/n, ĉ = yᵀy/n and tests on the
population risk with Σ = FΛFᵀ, b = FΛw*, c = w*ᵀΛw* + σ².
"""

from __future__ import annotations

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from runner.data_cache import cached_dataset
from tasks.optimizer_scaling.config import Config

CACHE_VERSION = 1


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


def problem_to_dataset(problem: dict[str, torch.Tensor]) -> datasets.Dataset:
    """Return a Dataset with one row per feature (rows of Σ̂, Σ, b̂, b); c, ĉ repeated per row."""
    rows = problem["sigma_hat"].shape[0]
    columns = {k: problem[k].numpy() for k in ("sigma_hat", "sigma", "b_hat", "b")}
    for k in ("c_hat", "c"):
        columns[k] = np.broadcast_to(problem[k].numpy(), (rows, problem[k].numel())).copy()
    return datasets.Dataset.from_dict({k: list(v) for k, v in columns.items()})


def dataset_to_problem(dataset: datasets.Dataset, n_features: int) -> dict[str, torch.Tensor]:
    """Return the statistics restricted to the first `n_features` features, as float64 tensors."""
    table = dataset.data.table
    out = {}
    for key in ("sigma_hat", "sigma", "b_hat", "b", "c_hat", "c"):
        column = table.column(key).combine_chunks()
        width = len(column[0])
        values = column.flatten().to_numpy().reshape(-1, width)
        out[key] = torch.from_numpy(values.copy()).to(torch.float64)
    n = n_features
    out["sigma_hat"], out["sigma"] = out["sigma_hat"][:n, :n], out["sigma"][:n, :n]
    out["b_hat"], out["b"] = out["b_hat"][:n], out["b"][:n]
    out["c_hat"], out["c"] = out["c_hat"][0], out["c"][0]
    return {k: v.contiguous() for k, v in out.items()}


class OptimizerScalingData(pl.LightningDataModule):
    """Builds (or reloads) the cached draw for (seed, s, D, n, N_max) and serves Σ̂, b̂."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, data_dir, seed
        self.problem: dict[str, torch.Tensor] | None = None

    def cache_key(self) -> dict:
        """Return the generating config that keys the cache."""
        c = self.cfg
        return {"task": "optimizer_scaling", "version": CACHE_VERSION, "seed": self.seed,
                "s": c.s, "latent_dim": c.latent_dim, "n_train": c.n_train,
                "max_features": c.max_features, "n_outputs": c.n_outputs,
                "noise_std": c.noise_std}

    def _dataset(self) -> datasets.Dataset:
        c = self.cfg
        return cached_dataset(
            self.data_dir, "optimizer_scaling", self.cache_key(),
            lambda: problem_to_dataset(draw_problem(
                self.seed, c.s, c.latent_dim, c.n_train, c.max_features, c.n_outputs,
                c.noise_std)),
        )

    def prepare_data(self) -> None:
        self._dataset()

    def setup(self, stage: str | None = None) -> None:
        if self.problem is None:
            self.problem = dataset_to_problem(self._dataset(), self.cfg.n_features)
            if self.cfg.population:
                p = self.problem
                p["sigma_hat"], p["b_hat"], p["c_hat"] = p["sigma"], p["b"], p["c"]

    def train_dataloader(self) -> DataLoader:
        batch = (self.problem["sigma_hat"], self.problem["b_hat"])
        return DataLoader(RepeatedBatch(batch, self.cfg.steps), batch_size=None, shuffle=False)
