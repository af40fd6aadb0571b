"""Data of the ei_network task: the connectivity draw J (and, for mode=infer, a recording).

Both are cached tensors (`tasks.base.TensorDataModule`) keyed by what generates them: J as its
non-zero entries (post, pre, w), the largest connection probability and the clipped shares
of the expected connections per block (the draw; see `connectivity.draw_connectivity`), the
recording as its frames x, their times and the divergence flags (part "recording", keyed by the
network and the dynamics parameters). The module caches the eigenvalues of J as a third part
("eigvals", `EINetworkModule._eigenvalues`), through the same `cached`.
"""

from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import DataLoader

from runner.batches import RepeatedBatch
from tasks.base import TensorDataModule
from tasks.ei_network.config import MAX_CLIPPED_SHARE, POPS, Config
from tasks.ei_network.connectivity import draw_connectivity, from_coo, to_coo
from tasks.ei_network.simulate import Recording, simulate

log = logging.getLogger("spectrum")
SIM_SEED_OFFSET = 7919  # the simulation's noise / initial state use seed + this
SIM_KEYS = ("tau", "dt", "t_total", "record_every", "noise_std", "inh_gain_scale", "init_low",
            "init_high")


def network_config(cfg: Config) -> dict:
    """Return the values that define the connectivity distribution (the draw's config)."""
    keys = ("dim", "n_exc", "inh_ratio", "density", "g_het", *(f"gbar_{p}" for p in POPS),
            *(f"range_{p}" for p in POPS))
    return {**{k: getattr(cfg, k) for k in keys}, "scale": cfg.scale}


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


class EINetworkData(TensorDataModule):
    """Draws (or reloads) J; in mode=infer also the activity recording to be fitted."""

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__(params, data_dir, seed)
        self.j: torch.Tensor | None = None
        self.info: dict = {}
        self.recording: Recording | None = None

    def generating_config(self) -> dict:
        return network_config(self.cfg)

    def build(self) -> dict[str, torch.Tensor]:
        j, info = draw_j(self.cfg, self.seed)
        return {**to_coo(j), **{k: torch.tensor(v, dtype=torch.float64) for k, v in info.items()}}

    def _build_recording(self) -> dict[str, torch.Tensor]:
        rec = run_dynamics(self.cfg, self.j, self.seed)
        at = math.nan if rec.diverged_at is None else rec.diverged_at
        return {"x": rec.x.to(torch.float32), "t": rec.times,
                "diverged": torch.tensor(rec.diverged),
                "diverged_at": torch.tensor(at, dtype=torch.float64)}

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        n = self.cfg.n_exc + self.cfg.n_inh
        self.j = from_coo(tensors["post"], tensors["pre"], tensors["w"], n)
        self.info = {k: float(v) for k, v in tensors.items() if k not in ("post", "pre", "w")}
        if self.info["clipped_share"] > 0:
            worst = max(POPS, key=lambda p: self.info[f"clipped_share_{p}"])
            log.warning("ei_network: connection probabilities above 1 (peak %.4f) are clipped at "
                        "1, removing %.3g%% of the expected connections of block %s (within the "
                        "clipping rule's bound, %g%%; reported as paper_metrics clipped_share)",
                        self.info["max_connection_prob"], 100 * self.info["clipped_share"],
                        worst, 100 * MAX_CLIPPED_SHARE)
        if self.cfg.mode == "infer":
            sim = {k: getattr(self.cfg, k) for k in SIM_KEYS}
            rec = self.cached("recording", {**self.generating_config(), **sim},
                              self._build_recording)
            at = float(rec["diverged_at"])
            self.recording = Recording(x=rec["x"], times=rec["t"], diverged=bool(rec["diverged"]),
                                       diverged_at=None if math.isnan(at) else at)

    def train_dataloader(self) -> DataLoader:
        if self.cfg.mode == "infer":
            return DataLoader(RepeatedBatch((self.recording.x,), self.cfg.infer_steps),
                              batch_size=None, shuffle=False)
        return DataLoader(RepeatedBatch((torch.zeros(1),), 1), batch_size=None, shuffle=False)
