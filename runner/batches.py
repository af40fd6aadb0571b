"""Data-set helpers shared by tasks whose "batch" is one precomputed object."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class RepeatedBatch(Dataset):
    """A data set of `length` items, each the same batch (full-batch methods, simulations)."""

    def __init__(self, batch: tuple[torch.Tensor, ...], length: int) -> None:
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return self.batch
