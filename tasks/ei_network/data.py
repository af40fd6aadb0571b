"""Data of the ei_network task: the connectivity draw J (and, for mode=infer, a recording).

Both are built once as Hugging Face datasets keyed by a hash of what generates them
(`runner.data_cache.cached_dataset`) and reloaded: J as one row per synapse (post, pre, w), the
recording as one row per frame (t, x).
"""

from __future__ import annotations

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from runner.data_cache import cached_dataset
from tasks.ei_network.config import Config
from tasks.ei_network.connectivity import draw_connectivity, from_coo, to_coo
from tasks.ei_network.simulate import Recording, simulate

CACHE_VERSION = 1
SIM_SEED_OFFSET = 7919  # the simulation's noise / initial state use seed + this


def network_cache_key(cfg: Config, seed: int) -> dict:
    """Return the key of the connectivity draw: the network parameters and the seed."""
    return {"task": "ei_network", "kind": "J", "version": CACHE_VERSION, "seed": int(seed),
            **cfg.network_key()}


def recording_cache_key(cfg: Config, seed: int) -> dict:
    """Return the key of a recording: the network key plus the dynamics parameters."""
    sim = {k: getattr(cfg, k) for k in ("tau", "dt", "t_total", "record_every", "noise_std",
                                        "inh_gain_scale", "init_low", "init_high")}
    return {**network_cache_key(cfg, seed), "kind": "recording", **sim}


def draw_j(cfg: Config, seed: int) -> tuple[torch.Tensor, dict]:
    """Return (J, info) for the resolved config and seed."""
    return draw_connectivity({"e": cfg.side_exc, "i": cfg.side_inh}, cfg.gbar(), cfg.ranges(),
                             cfg.g_het, cfg.density, cfg.dim, seed)


def run_dynamics(cfg: Config, j: torch.Tensor, seed: int) -> Recording:
    """Return the Recording of the rate dynamics of J under the config's settings."""
    return simulate(j, cfg.n_exc, tau=cfg.tau, dt=cfg.dt, t_total=cfg.t_total,
                    record_every=cfg.record_every, noise_std=cfg.noise_std,
                    inh_gain_scale=cfg.inh_gain_scale, init_low=cfg.init_low,
                    init_high=cfg.init_high, seed=seed + SIM_SEED_OFFSET)


def _column(ds: datasets.Dataset, key: str) -> np.ndarray:
    """Return a dataset column as a numpy array (lists become a 2-D array)."""
    import pyarrow as pa

    col = ds.data.table.column(key).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        width = len(col[0]) if len(col) else 0
        return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
    return col.to_numpy(zero_copy_only=False)


class EINetworkData(pl.LightningDataModule):
    """Draws (or reloads) J; in mode=infer also the activity recording to be fitted."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, data_dir, int(seed)
        self.j: torch.Tensor | None = None
        self.info: dict = {}
        self.recording: Recording | None = None

    def _network(self) -> datasets.Dataset:
        def build() -> datasets.Dataset:
            j, info = draw_j(self.cfg, self.seed)
            coo = to_coo(j)
            cols = {k: v.numpy() for k, v in coo.items()}
            cols["max_connection_prob"] = np.full(len(cols["w"]), info["max_connection_prob"])
            return datasets.Dataset.from_dict(cols)
        return cached_dataset(self.data_dir, "ei_network", network_cache_key(self.cfg, self.seed),
                              build)

    def _recording(self) -> datasets.Dataset:
        def build() -> datasets.Dataset:
            rec = run_dynamics(self.cfg, self.j, self.seed)
            return datasets.Dataset.from_dict({"t": rec.times.numpy(),
                                               "x": list(rec.x.numpy().astype(np.float32)),
                                               "diverged": [rec.diverged] * len(rec.times)})
        return cached_dataset(self.data_dir, "ei_network",
                              recording_cache_key(self.cfg, self.seed), build)

    def prepare_data(self) -> None:
        self._network()

    def setup(self, stage: str | None = None) -> None:
        if self.j is None:
            ds = self._network()
            n = self.cfg.n_exc + self.cfg.n_inh
            post, pre, w = (torch.from_numpy(_column(ds, k).copy()) for k in ("post", "pre", "w"))
            self.j = from_coo(post, pre, w, n)
            probs = _column(ds, "max_connection_prob")
            self.info = {"max_connection_prob": float(probs[0]) if len(probs) else 0.0}
        if self.cfg.mode == "infer" and self.recording is None:
            ds = self._recording()
            x = torch.from_numpy(_column(ds, "x").astype(np.float32))
            self.recording = Recording(x=x, times=torch.from_numpy(_column(ds, "t").copy()),
                                       diverged=bool(_column(ds, "diverged")[0]),
                                       diverged_at=None)

    def train_dataloader(self) -> DataLoader:
        if self.cfg.mode == "infer":
            return DataLoader(RepeatedBatch((self.recording.x,), self.cfg.infer_steps),
                              batch_size=None, shuffle=False)
        return DataLoader(RepeatedBatch((torch.zeros(1),), 1), batch_size=None, shuffle=False)
