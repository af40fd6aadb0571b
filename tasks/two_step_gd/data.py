"""The draw of one run: teacher β, two batches (X, y), and the initial weights (W0, a).

x_i ~ N(0, I_d), y_i = σ*(βᵀx_i) + ε_i with ‖β‖ = 1 and ε_i ~ N(0, noise_std²); rows of W0 are
uniform on S^{d−1} (`sphere`) or N(0, I/d) (`gaussian`); a ~ N(0, I/N). Everything comes from
the run seed alone, so every (α1, α2, batch_reuse) at one (N, seed) sees the same draw. The draw
is cached as Hugging Face data sets (one per part) keyed by the generating config.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from runner.data_cache import cached_dataset
from tasks.two_step_gd.config import Config
from tasks.two_step_gd.model import target_fn

CACHE_VERSION = 1
PARTS = {"samples": ("x", "y", "batch"), "weights": ("w0", "a"), "teacher": ("beta",)}


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


def matrix_column(matrix: np.ndarray) -> pa.Array:
    """Return a fixed-size-list Arrow column with one row per matrix row (no Python lists)."""
    matrix = np.ascontiguousarray(matrix)
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def column_matrix(dataset: datasets.Dataset, key: str) -> torch.Tensor:
    """Return a column of `dataset` as a tensor: (rows, width) for list columns, (rows,) else."""
    column = dataset.data.table.column(key).combine_chunks()
    if pa.types.is_fixed_size_list(column.type):
        values = column.flatten().to_numpy(zero_copy_only=False)
        return torch.from_numpy(values.reshape(len(column), -1).copy())
    return torch.from_numpy(column.to_numpy(zero_copy_only=False).copy())


def draw_to_datasets(problem: dict[str, torch.Tensor]) -> dict[str, datasets.Dataset]:
    """Return the draw split into the three cached parts (samples, weights, teacher)."""
    n = problem["y1"].numel()
    x = torch.cat([problem["x1"], problem["x2"]]).numpy()
    samples = pa.table({"x": matrix_column(x),
                        "y": pa.array(torch.cat([problem["y1"], problem["y2"]]).numpy()),
                        "batch": pa.array(np.repeat(np.array([1, 2], np.int8), n))})
    weights = pa.table({"w0": matrix_column(problem["w0"].numpy()),
                        "a": pa.array(problem["a"].numpy())})
    teacher = pa.table({"beta": matrix_column(problem["beta"].numpy()[None, :])})
    return {name: datasets.Dataset(table) for name, table in
            (("samples", samples), ("weights", weights), ("teacher", teacher))}


def datasets_to_draw(parts: dict[str, datasets.Dataset]) -> dict[str, torch.Tensor]:
    """Return the tensors of `draw` from the three cached parts."""
    x, y = column_matrix(parts["samples"], "x"), column_matrix(parts["samples"], "y")
    batch = column_matrix(parts["samples"], "batch")
    first, second = batch == 1, batch == 2
    return {"x1": x[first], "y1": y[first], "x2": x[second], "y2": y[second],
            "w0": column_matrix(parts["weights"], "w0"), "a": column_matrix(parts["weights"], "a"),
            "beta": column_matrix(parts["teacher"], "beta")[0]}


class StepBatches(Dataset):
    """One item per epoch: both batches of the draw; the module uses the epoch's one."""

    def __init__(self, problem: dict[str, torch.Tensor]) -> None:
        self.problem = problem

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.problem


class TwoStepData(pl.LightningDataModule):
    """Builds (or reloads) the cached draw for (seed, N, d, n, target, noise, w_init)."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, data_dir, seed
        self.problem: dict[str, torch.Tensor] | None = None

    def cache_key(self, part: str) -> dict:
        """Return the generating config that keys the cache of one part."""
        c = self.cfg
        return {"task": "two_step_gd", "version": CACHE_VERSION, "part": part,
                "seed": self.seed, "n_hidden": c.n_hidden, "dim": c.dim,
                "n_samples": c.n_samples, "target": c.target, "noise_std": c.noise_std,
                "w_init": c.w_init}

    def _parts(self) -> dict[str, datasets.Dataset]:
        c = self.cfg
        built: dict[str, datasets.Dataset] = {}

        def build(part: str) -> datasets.Dataset:
            if not built:
                built.update(draw_to_datasets(draw(self.seed, c.n_hidden, c.dim, c.n_samples,
                                                   c.target, c.noise_std, c.w_init)))
            return built[part]

        return {part: cached_dataset(self.data_dir, "two_step_gd", self.cache_key(part),
                                     lambda part=part: build(part)) for part in PARTS}

    def prepare_data(self) -> None:
        self._parts()

    def setup(self, stage: str | None = None) -> None:
        if self.problem is None:
            self.problem = datasets_to_draw(self._parts())

    def train_dataloader(self) -> DataLoader:
        return DataLoader(StepBatches(self.problem), batch_size=None, shuffle=False)
