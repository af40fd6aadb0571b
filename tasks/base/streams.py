"""Resumable train loaders: the batches of a fit as a function of where the fit stands.

Lightning restarts a fit from a mid-epoch checkpoint by iterating the train loader from its
start again: a torch DataLoader would serve the epoch's first batches a second time, and a
RandomSampler would draw a new order. These loaders ask the trainer where the restored fit
stands, `fit_position(trainer)` = (epoch, batches completed in it), and serve the rest of the
epoch only; their length stays the full epoch, so Lightning's counters line up.

`IndexedBatches`: batch i is a pure function of i (one epoch of n batches); like a DataLoader,
each pass draws one number from torch's global generator first (`draw_base_seed`).
`ShuffledBatches`: one pass over the rows per epoch in a random order drawn, exactly as torch's
`DataLoader(BatchSampler(RandomSampler(rows)))` draws it, from torch's global generator at the
epoch's start; the order's seed is kept in the checkpoint (Lightning saves a loader's
`state_dict()` with its loops) so a resumed epoch continues in the same order.
Neither loader shards over processes: under DDP every rank sees the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch


def fit_position(trainer: Any) -> tuple[int, int]:
    """Return (current epoch, batches completed in it) of `trainer`'s fit ((0, 0) without one);
    when resuming, the position the checkpoint restored."""
    if trainer is None:
        return 0, 0
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    return int(trainer.current_epoch), int(progress.completed)


class IndexedBatches:
    """`n` batches, batch i = `batch_at(i)`; a resumed fit continues at the first one not
    trained (`position()` returns (epoch, batches completed), see `fit_position`)."""

    def __init__(self, batch_at: Callable[[int], Any], n: int,
                 position: Callable[[], tuple[int, int]]) -> None:
        self.batch_at, self.n, self.position = batch_at, int(n), position

    def __len__(self) -> int:
        return self.n

    def state_dict(self) -> dict[str, Any]:
        """Return {} (the position comes from the restored trainer; the method tells Lightning
        that this loader resumes mid-epoch)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (see `state_dict`)."""

    def __iter__(self) -> Iterator[Any]:
        draw_base_seed()  # as a DataLoader does on every pass (resumed: restored after it)
        _, done = self.position()
        for index in range(min(done, self.n), self.n):
            yield self.batch_at(index)


def draw_base_seed() -> None:
    """Draw the one int64 from torch's global generator that a torch DataLoader draws at the
    start of every pass (its workers' base seed; unused here): the loaders here leave the global
    stream, and so every augmentation, exactly as the DataLoaders the measured runs used."""
    torch.empty((), dtype=torch.int64).random_()


def draw_epoch_seed() -> int:
    """Return the seed of an epoch's order, drawn from torch's global generator as a DataLoader
    over a RandomSampler draws it: the base seed, then the sampler's seed."""
    draw_base_seed()
    return int(torch.empty((), dtype=torch.int64).random_().item())


def epoch_order(n_rows: int, seed: int) -> torch.Tensor:
    """Return the permutation of `n_rows` rows for an epoch seed (RandomSampler's randperm)."""
    return torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))


class ShuffledBatches:
    """Batches of `batch_size` rows (the last one smaller) of one random pass over `n_rows` per
    epoch; `gather(rows)` turns a LongTensor of row indices into a batch."""

    def __init__(self, n_rows: int, batch_size: int, gather: Callable[[torch.Tensor], Any],
                 position: Callable[[], tuple[int, int]]) -> None:
        self.n_rows, self.batch_size = int(n_rows), int(batch_size)
        self.gather, self.position = gather, position
        self._epoch: int | None = None  # the epoch whose order `_seed` fixes
        self._seed: int | None = None

    def __len__(self) -> int:
        return -(-self.n_rows // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self._epoch, "seed": self._seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._epoch, self._seed = state.get("epoch"), state.get("seed")

    def __iter__(self) -> Iterator[Any]:
        epoch, done = self.position()
        if self._epoch != epoch or self._seed is None:  # a new epoch: draw its order
            self._epoch, self._seed = epoch, draw_epoch_seed()
        order = epoch_order(self.n_rows, self._seed)
        for b in range(min(done, len(self)), len(self)):
            yield self.gather(order[b * self.batch_size:(b + 1) * self.batch_size])
