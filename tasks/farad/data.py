"""LT-digits: a balanced test set and long-tailed labelled / unlabelled sets from load_digits.

Pixels are scaled to [0, 1] (value / 16), images are (1, 8, 8). The split depends on the run
seed alone (tasks/farad/splits.py), so every method at one seed sees the same data; it is cached
as tensors keyed by the generating config (tasks.base.TensorDataModule). A train "batch" i is
drawn with a generator seeded by (seed, i): labelled and unlabelled indices uniformly with
replacement.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from runner.batches import RepeatedBatch
from tasks.base import TensorDataModule
from tasks.farad.splits import split_indices

IMAGE_SHAPE = (1, 8, 8)
PARTS = ("test", "labeled", "unlabeled")


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """Return (images (1797, 1, 8, 8) float32 in [0, 1], labels (1797,) int64) of load_digits."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 16.0)[:, None, :, :]
    return images, digits.target.astype(np.int64)


def draw_split(seed: int, test_per_class: int, labeled: list[int],
               unlabeled: list[int]) -> dict[str, torch.Tensor]:
    """Return {x_test, y_test, x_labeled, y_labeled, x_unlabeled, y_unlabeled}: images
    (n, 1, 8, 8) float32 and labels (n,) int64 of each part, in split_indices' order."""
    images, labels = load_digits_raw()
    idx = split_indices(labels, seed, test_per_class, labeled, unlabeled)
    out = {}
    for name in PARTS:
        out[f"x_{name}"] = torch.from_numpy(np.ascontiguousarray(images[idx[name]]))
        out[f"y_{name}"] = torch.from_numpy(np.ascontiguousarray(labels[idx[name]]))
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


class FaradData(TensorDataModule):
    """The cached split for (seed, test_per_class, class counts); serves SSL batches."""

    def generating_config(self) -> dict:
        c = self.cfg
        return {"test_per_class": c.test_per_class, "labeled": c.labeled_counts,
                "unlabeled": c.unlabeled_counts}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        return draw_split(self.seed, c.test_per_class, c.labeled_counts, c.unlabeled_counts)

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.split = tensors

    def train_dataloader(self) -> DataLoader:
        c = self.cfg
        batches = SSLBatches(self.split, c.batch_labeled, c.batch_unlabeled, c.iterations,
                             self.seed)
        return DataLoader(batches, batch_size=None, shuffle=False, num_workers=0)

    def test_dataloader(self) -> DataLoader:
        batch = (self.split["x_test"], self.split["y_test"])
        return DataLoader(RepeatedBatch(batch, 1), batch_size=None, shuffle=False)
