"""The spurious-digits data module: the cached split and attribute draw, and the train loader.

The generating draw (stratified train/test split, training attributes, the probe halves of the
test set) depends on (seed, ρ, n_attr, test_frac) alone and is cached (tasks.base.data) as one
row per digit image: image (float32, 64 pixels), y, a (int64; −1 for test images: they are
rendered under every a), split (int8: 0 train, 1 test) and probe_half (int8; test images: 1 =
probe-train half, 0 = evaluation half).
One training epoch is one pass over the training split: ceil(n_train/batch_size) steps.
"""

from __future__ import annotations

import numpy as np
import torch

from tasks.base import TensorDataModule
from tasks.base.streams import ShuffledBatches, fit_position
from tasks.spectral_ssl import benchmark


def build_split(seed: int, rho: float, n_attr: int, test_frac: float) -> dict[str, np.ndarray]:
    """Return the columns of the cached set: image (n, 64), y, a, split, probe_half."""
    images, y = benchmark.load_digit_images()
    gen = np.random.default_rng(seed)
    train, test = benchmark.stratified_split(y, test_frac, gen)
    a = np.full(y.size, -1, dtype=np.int64)
    a[train] = benchmark.draw_attributes(y[train], rho, n_attr, gen)
    split = np.zeros(y.size, dtype=np.int8)
    split[test] = 1
    half = np.zeros(y.size, dtype=np.int8)
    half[test] = benchmark.half_split(y[test], gen)
    return {"image": images, "y": y, "a": a, "split": split, "probe_half": half}


class SpuriousDigitsData(TensorDataModule):
    """Serves (image, y, a) of the training split; the module reads `train`/`test` for probes."""

    train: dict[str, torch.Tensor] | None = None
    test: dict[str, torch.Tensor] | None = None

    def generating_config(self) -> dict:
        c = self.cfg
        return {"spurious_rho": c.spurious_rho, "n_attr": c.n_attr, "test_frac": c.test_frac}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        cols = build_split(self.seed, c.spurious_rho, c.n_attr, c.test_frac)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in cols.items()}

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        t = tensors  # image float32 (n, 64); y, a int64; split, probe_half int8
        tr, te = t["split"] == 0, t["split"] == 1
        self.train = {"image": t["image"][tr], "y": t["y"][tr], "a": t["a"][tr]}
        self.test = {"image": t["image"][te], "y": t["y"][te],
                     "probe_half": t["probe_half"][te].bool()}

    def steps_per_epoch(self) -> int:
        """Return ceil(n_train / batch_size), the steps of one pass over the training split."""
        n = int(self.train["y"].numel())
        return -(-n // self.cfg.batch_size)

    def train_dataloader(self) -> ShuffledBatches:
        """Return (image, y, a) batches of one shuffled pass per epoch (resumable)."""
        t = self.train

        def gather(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return t["image"][rows], t["y"][rows], t["a"][rows]

        return ShuffledBatches(int(t["y"].numel()), self.cfg.batch_size, gather,
                               lambda: fit_position(self.trainer))
