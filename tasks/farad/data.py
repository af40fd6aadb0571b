"""LT-digits: a balanced test set and long-tailed labelled / unlabelled sets from load_digits.

Pixels are scaled to [0, 1] (value / 16), images are (1, 8, 8). The split depends on the run
seed alone (tasks/farad/splits.py), so every method at one seed sees the same data; it is cached
as a Hugging Face data set keyed by the generating config. A train "batch" i is drawn with a
generator seeded by (seed, i): labelled and unlabelled indices uniformly with replacement.
"""

from __future__ import annotations

import datasets
import numpy as np
import pyarrow as pa
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from runner.batches import RepeatedBatch
from runner.data_cache import cached_dataset
from tasks.farad.config import Config
from tasks.farad.splits import split_indices

CACHE_VERSION = 1
IMAGE_SHAPE = (1, 8, 8)
PARTS = ("test", "labeled", "unlabeled")


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """Return (images (1797, 1, 8, 8) float32 in [0, 1], labels (1797,) int64) of load_digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    return images, digits.target.astype(np.int64)


def build_split(seed: int, test_per_class: int, labeled: list[int],
                unlabeled: list[int]) -> datasets.Dataset:
    """Return the split as a Dataset with columns x (64 floats), y, part (0 test, 1 lab, 2 unl)."""
    images, labels = load_digits_raw()
    idx = split_indices(labels, seed, test_per_class, labeled, unlabeled)
    order = np.concatenate([idx[p] for p in PARTS])
    part = np.concatenate([np.full(idx[p].size, i, np.int8) for i, p in enumerate(PARTS)])
    flat = np.ascontiguousarray(images[order].reshape(order.size, -1))
    table = pa.table({
        "x": pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1]),
        "y": pa.array(labels[order]),
        "part": pa.array(part),
    })
    return datasets.Dataset(table)


def dataset_to_split(dataset: datasets.Dataset) -> dict[str, torch.Tensor]:
    """Return {x_test, y_test, x_labeled, y_labeled, x_unlabeled, y_unlabeled} tensors."""
    table = dataset.data.table
    column = table.column("x").combine_chunks()
    x = torch.from_numpy(column.flatten().to_numpy(zero_copy_only=False).reshape(
        len(column), *IMAGE_SHAPE).copy())
    y = torch.from_numpy(table.column("y").to_numpy().copy())
    part = torch.from_numpy(table.column("part").to_numpy().copy())
    out = {}
    for i, name in enumerate(PARTS):
        out[f"x_{name}"], out[f"y_{name}"] = x[part == i], y[part == i]
    return out


class SSLBatches(Dataset):
    """`iterations` items; item i = (x_l, y_l, x_u, y_u) drawn with a generator seeded by (seed, i)
    (y_u, the hidden labels of the unlabelled batch, is used for diagnostics only)."""

    def __init__(self, split: dict[str, torch.Tensor], batch_labeled: int, batch_unlabeled: int,
                 iterations: int, seed: int) -> None:
        self.split, self.iterations, self.seed = split, iterations, seed
        self.b_l, self.b_u = batch_labeled, batch_unlabeled

    def __len__(self) -> int:
        return self.iterations

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(index) + 1)
        s = self.split
        il = torch.randint(s["y_labeled"].numel(), (self.b_l,), generator=gen)
        iu = torch.randint(s["y_unlabeled"].numel(), (self.b_u,), generator=gen)
        return s["x_labeled"][il], s["y_labeled"][il], s["x_unlabeled"][iu], s["y_unlabeled"][iu]


class FaradData(pl.LightningDataModule):
    """Builds (or reloads) the cached split for (seed, counts) and serves SSL batches."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, data_dir, seed
        self.split: dict[str, torch.Tensor] | None = None

    def cache_key(self) -> dict:
        """Return the generating config that keys the cache."""
        c = self.cfg
        return {"task": "farad", "version": CACHE_VERSION, "seed": self.seed,
                "test_per_class": c.test_per_class, "labeled": c.labeled_counts,
                "unlabeled": c.unlabeled_counts}

    def _dataset(self) -> datasets.Dataset:
        c = self.cfg
        return cached_dataset(self.data_dir, "farad", self.cache_key(), lambda: build_split(
            self.seed, c.test_per_class, c.labeled_counts, c.unlabeled_counts))

    def prepare_data(self) -> None:
        self._dataset()

    def setup(self, stage: str | None = None) -> None:
        if self.split is None:
            self.split = dataset_to_split(self._dataset())

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        batches = SSLBatches(self.split, c.batch_labeled, c.batch_unlabeled, c.iterations,
                             self.seed)
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        batch = (self.split["x_test"], self.split["y_test"])
        return DataLoader(RepeatedBatch(batch, 1), batch_size=None, shuffle=False)
