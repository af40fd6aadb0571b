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
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from tasks.base import TensorDataModule
from tasks.base.streams import IndexedBatches, fit_position
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


def ssl_batch(split: dict[str, torch.Tensor], batch_labeled: int, batch_unlabeled: int,
              seed: int, index: int) -> tuple[torch.Tensor, ...]:
    """Return train batch `index`: (x_l, y_l, x_u, y_u) drawn uniformly with replacement with a
    generator seeded by (seed, index) (y_u, the hidden labels of the unlabelled batch, is used
    for diagnostics only)."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(index) + 1)
    il = torch.randint(split["y_labeled"].numel(), (batch_labeled,), generator=gen)
    iu = torch.randint(split["y_unlabeled"].numel(), (batch_unlabeled,), generator=gen)
    return (split["x_labeled"][il], split["y_labeled"][il], split["x_unlabeled"][iu],
            split["y_unlabeled"][iu])


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

    def train_dataloader(self) -> IndexedBatches:
        """Return the `iterations` train batches (a resumed fit continues where it stopped)."""
        c = self.cfg

        def batch_at(index: int) -> tuple[torch.Tensor, ...]:
            return ssl_batch(self.split, c.batch_labeled, c.batch_unlabeled, self.seed, index)

        return IndexedBatches(batch_at, c.iterations, lambda: fit_position(self.trainer))

    def test_dataloader(self) -> DataLoader:
        batch = (self.split["x_test"], self.split["y_test"])
        return DataLoader(RepeatedBatch(batch, 1), batch_size=None, shuffle=False)
