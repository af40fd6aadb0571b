"""The spurious-digits data module: the cached split and attribute draw, and the train loader.

The generating draw (stratified train/test split, training attributes, the probe halves of the
test set) depends on (seed, ρ, n_attr, test_frac) alone and is cached as a Hugging Face data set
with one row per digit image: pixels, y, a (−1 for test images: they are rendered under every a),
split (0 train, 1 test) and probe_half (test images: 1 = probe-train half, 0 = evaluation half).
One training epoch is one pass over the training split: ceil(n_train/batch_size) steps.
"""

from __future__ import annotations

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from runner.data_cache import cached_dataset
from tasks.spectral_ssl import benchmark
from tasks.spectral_ssl.config import Config

CACHE_VERSION = 1


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


def to_dataset(columns: dict[str, np.ndarray]) -> datasets.Dataset:
    """Return the columns as a Hugging Face data set (images as fixed-length float lists)."""
    import pyarrow as pa

    img = np.ascontiguousarray(columns["image"], dtype=np.float32)
    table = pa.table({
        "image": pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), img.shape[1]),
        **{k: pa.array(columns[k]) for k in ("y", "a", "split", "probe_half")}})
    return datasets.Dataset(table)


def from_dataset(dataset: datasets.Dataset) -> dict[str, torch.Tensor]:
    """Return the cached columns as tensors (image float32 (n, 64), the rest int64)."""
    table = dataset.data.table
    img = table.column("image").combine_chunks()
    out = {"image": torch.from_numpy(
        img.flatten().to_numpy().reshape(len(img), -1).astype(np.float32))}
    for key in ("y", "a", "split", "probe_half"):
        out[key] = torch.from_numpy(table.column(key).to_numpy().astype(np.int64))
    return out


class IndexedTensors(Dataset):
    """Tensors indexed by a list of rows at once (one gather per batch, no per-item collate)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return int(self.tensors[0].shape[0])

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(rows)
        return tuple(t[index] for t in self.tensors)


class SpuriousDigitsData(pl.LightningDataModule):
    """Serves (image, y, a) of the training split; the module reads `train`/`test` for probes."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, data_dir, seed
        self.train: dict[str, torch.Tensor] | None = None
        self.test: dict[str, torch.Tensor] | None = None

    def cache_key(self) -> dict:
        """Return the generating config that keys the cache."""
        c = self.cfg
        return {"task": "spectral_ssl", "version": CACHE_VERSION, "seed": self.seed,
                "spurious_rho": c.spurious_rho, "n_attr": c.n_attr, "test_frac": c.test_frac}

    def _dataset(self) -> datasets.Dataset:
        c = self.cfg
        return cached_dataset(self.data_dir, "spectral_ssl", self.cache_key(), lambda: to_dataset(
            build_split(self.seed, c.spurious_rho, c.n_attr, c.test_frac)))

    def prepare_data(self) -> None:
        self._dataset()

    def setup(self, stage: str | None = None) -> None:
        if self.train is not None:
            return
        cols = from_dataset(self._dataset())
        tr, te = cols["split"] == 0, cols["split"] == 1
        self.train = {"image": cols["image"][tr], "y": cols["y"][tr], "a": cols["a"][tr]}
        self.test = {"image": cols["image"][te], "y": cols["y"][te],
                     "probe_half": cols["probe_half"][te].bool()}

    def steps_per_epoch(self) -> int:
        """Return ceil(n_train / batch_size), the steps of one pass over the training split."""
        n = int(self.train["y"].numel())
        return -(-n // self.cfg.batch_size)

    def train_dataloader(self) -> DataLoader:
        t = self.train
        data = IndexedTensors(t["image"], t["y"], t["a"])
        sampler = BatchSampler(RandomSampler(data), self.cfg.batch_size, drop_last=False)
        return DataLoader(data, sampler=sampler, batch_size=None, num_workers=0)
