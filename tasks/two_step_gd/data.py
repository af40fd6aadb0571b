"""The draw of one run: teacher β, two batches (X, y), and the initial weights (W0, a).

x_i ~ N(0, I_d), y_i = σ*(βᵀx_i) + ε_i with ‖β‖ = 1 and ε_i ~ N(0, noise_std²); rows of W0 are
uniform on S^{d−1} (`sphere`) or N(0, I/d) (`gaussian`); a ~ N(0, I/N). Everything comes from
the run seed alone, so every (α1, α2, batch_reuse) at one (N, seed) sees the same draw. The draw
(samples, weights and teacher: one dict of float32 tensors) is cached by `TensorDataModule`.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.base import TensorDataModule
from tasks.two_step_gd.model import target_fn


def draw(seed: int, width: int, dim: int, n_samples: int, target: str, noise_std: float,
         w_init: str) -> dict[str, torch.Tensor]:
    """Return float32 tensors beta (d,), a (N,), w0 (N, d), x1, x2 (n, d), y1, y2 (n,)."""
    gen = torch.Generator().manual_seed(int(seed))
    beta = torch.randn(dim, generator=gen, dtype=torch.float64)
    beta = beta / beta.norm()
    a = torch.randn(width, generator=gen, dtype=torch.float64) / width**0.5
    w0 = torch.randn(width, dim, generator=gen, dtype=torch.float64)
    w0 = w0 / (w0.norm(dim=1, keepdim=True) if w_init == "sphere" else dim**0.5)
    sigma_star = target_fn(target)
    out = {"beta": beta, "a": a, "w0": w0}
    for b in (1, 2):
        x = torch.randn(n_samples, dim, generator=gen, dtype=torch.float64)
        eps = torch.randn(n_samples, generator=gen, dtype=torch.float64)
        out[f"x{b}"], out[f"y{b}"] = x, sigma_star(x @ beta) + noise_std * eps
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


class StepBatches(Dataset):
    """One item per epoch: both batches of the draw; the module uses the epoch's one."""

    def __init__(self, problem: dict[str, torch.Tensor]) -> None:
        self.problem = problem

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.problem


class TwoStepData(TensorDataModule):
    """The cached draw for (seed, N, d, n, target, noise, w_init); `problem` holds its tensors."""

    problem: dict[str, torch.Tensor] | None = None

    def generating_config(self) -> dict:
        c = self.cfg
        return {"n_hidden": c.n_hidden, "dim": c.dim, "n_samples": c.n_samples,
                "target": c.target, "noise_std": c.noise_std, "w_init": c.w_init}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        return draw(self.seed, c.n_hidden, c.dim, c.n_samples, c.target, c.noise_std, c.w_init)

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.problem = dict(tensors)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(StepBatches(self.problem), batch_size=None, shuffle=False)
