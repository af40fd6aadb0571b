"""Training of the backbone at L_train through a Lightning Trainer, once per (model config,
data config, training config, seed), cached under `<data_dir>/mamba_modulation/`.

`cached_backbone` goes through the platform's one model cache, `tasks.base.checkpoint.cached_module`:
an exclusive fcntl lock on `<file>.lock` while it looks for the checkpoint and, when it is absent
or corrupt, trains and writes it (temporary file + rename): two jobs of a parallel sweep never
both train it and never read a half-written file; the second waits, then loads. The checkpoint
is a safetensors file of the LM's state_dict whose metadata holds the key, a SHA-1 of the
tensors (a corrupt file is reported and rebuilt) and the training metrics.

`lm`: next-byte CE on random windows. `passkey`: CE on the answer digits + lm_loss_weight × LM
loss, until the running answer accuracy (mean of the last 20 steps) reaches 0.98, then 100
more steps, capped at `train_steps`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from tasks.base.checkpoint import Backbone, cached_module, read_checkpoint
from tasks.base.data import data_code_hash
from tasks.base.streams import IndexedBatches, fit_position
from tasks.mamba_modulation import metrics
from tasks.mamba_modulation.model import MambaLM, build_lm

PASSKEY_TARGET = 0.98   # passkey: stop PASSKEY_EXTRA steps after the running accuracy reaches it
PASSKEY_EXTRA = 100
RUNNING = 20            # steps in the running accuracy


class TrainModule(pl.LightningModule):
    """Trains the backbone on `data.train_batch(step)` with AdamW (cosine-free, constant lr)."""

    def __init__(self, lm: MambaLM, data: Any, params: Any) -> None:
        super().__init__()
        self.lm, self.data, self.cfg = lm, data, params
        self.losses: list[float] = []
        self.accs: list[float] = []
        self.reached: int | None = None

    def train_dataloader(self) -> IndexedBatches:
        return IndexedBatches(self.data.train_batch, self.cfg.train_steps,
                              lambda: fit_position(self.trainer))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.cfg.setting == "lm":
            loss = metrics.lm_loss(self.lm, batch)
        else:
            loss, acc = metrics.passkey_loss(self.lm, batch, self.cfg.lm_loss_weight)
            self.accs.append(float(acc))
            recent = self.accs[-RUNNING:]
            if self.reached is None and len(recent) == RUNNING and \
                    sum(recent) / RUNNING >= PASSKEY_TARGET:
                self.reached = len(self.accs)
            if self.reached is not None and len(self.accs) >= self.reached + PASSKEY_EXTRA:
                self.trainer.should_stop = True
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.lm.parameters(), lr=self.cfg.lr, weight_decay=0.01)


def backbone_key(params: Any, data: Any, seed: int) -> dict[str, Any]:
    """Return the cache key: model config, training config, data config, seed and the hash of
    this task's model / training / data code."""
    c = params
    return {"part": "backbone", "seed": int(seed),
            "model": {"vocab": c.vocab, "d_model": c.d_model, "n_layers": c.n_layers,
                      "d_state": c.d_state, "expand": c.expand, "a_init": str(c.a_init),
                      "backbone": str(c.backbone)},
            "train": {"setting": str(c.setting), "train_len": c.train_len,
                      "train_steps": c.train_steps, "batch_size": c.batch_size, "lr": c.lr,
                      "lm_loss_weight": c.lm_loss_weight if c.setting == "passkey" else None},
            "data": data.generating_config(),
            "code": data_code_hash(sys.modules[__name__])}


def train_backbone(params: Any, data: Any, seed: int) -> tuple[MambaLM, dict[str, Any]]:
    """Return (LM, metrics) after training at L_train through a Lightning Trainer (inside a
    forked RNG: the caller's streams are as before). metrics: steps, final_loss (mean of the
    last 20 steps), and for passkey final_acc and the step where the target was reached."""
    lm = build_lm(params, params.vocab, seed)
    module = TrainModule(lm, data, params)
    start = time.perf_counter()
    if params.train_steps > 0:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trainer = pl.Trainer(max_steps=params.train_steps, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False,
                                 enable_model_summary=False, accelerator="cpu", devices=1,
                                 num_sanity_val_steps=0, callbacks=[], deterministic=True)
            trainer.fit(module)
    tail = module.losses[-RUNNING:]
    out: dict[str, Any] = {"steps": len(module.losses), "train_wall_s": time.perf_counter() - start,
                           "final_loss": sum(tail) / len(tail) if tail else float("nan")}
    if params.setting == "passkey":
        recent = module.accs[-RUNNING:]
        out["final_acc"] = sum(recent) / len(recent) if recent else float("nan")
        out["target_reached_step"] = module.reached
    return lm.eval(), out


def load_backbone(path: Path, params: Any, seed: int) -> tuple[MambaLM, dict[str, Any]]:
    """Return (LM, metrics) from a checkpoint of `tasks.base.checkpoint`; raise ValueError when
    it is corrupt or its tensors do not fit the model of `params`."""
    tensors, info = read_checkpoint(path)
    lm = build_lm(params, params.vocab, seed)
    try:
        lm.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"keys do not match the model ({err})") from err
    return lm.eval(), info


def cached_backbone(data_dir: str, params: Any, data: Any, seed: int) -> Backbone:
    """Return the trained backbone of (configs, seed) from
    `<data_dir>/mamba_modulation/backbone-<hash of key>.safetensors`: loaded when present and
    intact, else trained now and written (`tasks.base.checkpoint.cached_module`: under a file
    lock, atomically; `seconds`: the load or the training after the lock was acquired)."""
    return cached_module(data_dir, "mamba_modulation", "backbone",
                         backbone_key(params, data, seed),
                         train=lambda: train_backbone(params, data, seed),
                         load=lambda path: load_backbone(path, params, seed))
