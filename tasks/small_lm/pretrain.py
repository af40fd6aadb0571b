"""Next-token pretraining of the small LM through a Lightning Trainer, once per (backbone
config, corpus config, pretraining config, seed), cached under `<data_dir>/small_lm/`.

`cached_backbone` keeps it in the project's one model cache, `tasks.base.checkpoint`
(`cached_module`: an exclusive file lock while it looks for the checkpoint and, when it is
absent or corrupt, trains and writes it atomically; two jobs of a parallel sweep never both
train it; the SHA-1 of the tensors in the metadata catches a truncated or altered file, which
is reported and rebuilt). The checkpoint holds the transformer's weights.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tasks.base.checkpoint import Backbone, cached_module, read_checkpoint, write_checkpoint
from tasks.base.data import data_code_hash
from tasks.base.streams import ShuffledBatches, fit_position
from tasks.small_lm.config import BackboneConfig, CorpusConfig, PretrainConfig, as_key
from tasks.small_lm.corpus import cached_corpus
from tasks.small_lm.model import build_backbone

log = logging.getLogger("spectrum")
HELD_OUT = 512  # the last documents of the corpus: the next-token accuracy after pretraining


def next_token_loss(lm: torch.nn.Module, tokens: torch.Tensor, pad_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mean cross-entropy, accuracy) of predicting token t+1 from tokens ≤ t, over the
    positions whose target is not padding."""
    logits = lm(input_ids=tokens).logits[:, :-1]
    target = tokens[:, 1:]
    keep = target != pad_id
    loss = F.cross_entropy(logits[keep], target[keep])
    acc = (logits[keep].argmax(-1) == target[keep]).float().mean()
    return loss, acc


class PretrainModule(pl.LightningModule):
    """Next-token prediction on the generated corpus (AdamW)."""

    def __init__(self, lm: torch.nn.Module, tokens: torch.Tensor, cfg: PretrainConfig,
                 pad_id: int) -> None:
        super().__init__()
        self.lm, self.tokens, self.cfg, self.pad_id = lm, tokens, cfg, pad_id
        self.losses: list[float] = []

    def train_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(self.tokens.shape[0], self.cfg.batch_size,
                               lambda rows: self.tokens[rows], lambda: fit_position(self.trainer))

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, _ = next_token_loss(self.lm, batch, self.pad_id)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.lm.parameters(), lr=self.cfg.lr, weight_decay=0.01)


def backbone_key(model: BackboneConfig, corpus: CorpusConfig, train: PretrainConfig,
                 seed: int) -> dict[str, Any]:
    """Return the cache key: the three configs, the seed and the hash of the small-LM code."""
    return {"part": "backbone", "seed": int(seed), **as_key(model, corpus, train),
            "code": data_code_hash(sys.modules[__name__])}


def pretrain(model: BackboneConfig, corpus: CorpusConfig, train: PretrainConfig, seed: int,
             data_dir: str) -> tuple[torch.nn.Module, dict[str, float]]:
    """Return (LM, metrics) after `train.steps` steps of next-token prediction on the cached
    corpus (all but its last HELD_OUT documents) through a Lightning Trainer; the LM is built
    and trained under torch seed `seed` inside a forked RNG, so the caller's streams are as
    before. metrics: final_loss (mean of the last 50 steps), heldout_loss, heldout_acc."""
    docs = cached_corpus(data_dir, corpus, model, seed)["tokens"]
    n_train = max(1, docs.shape[0] - HELD_OUT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = build_backbone(model).train()
        module = PretrainModule(lm, docs[:n_train], train, model.pad_id)
        if train.steps > 0:
            trainer = pl.Trainer(max_steps=train.steps, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False,
                                 accelerator="cpu", devices=1, num_sanity_val_steps=0,
                                 callbacks=[], deterministic=True)
            trainer.fit(module)
    lm.eval()
    with torch.no_grad():
        held = docs[n_train:] if docs.shape[0] > n_train else docs
        loss, acc = next_token_loss(lm, held, model.pad_id)
    tail = module.losses[-50:]
    metrics = {"final_loss": float(sum(tail) / len(tail)) if tail else float("nan"),
               "heldout_loss": float(loss), "heldout_acc": float(acc)}
    return lm, metrics


def _load(path: Path, model: BackboneConfig) -> tuple[torch.nn.Module, dict[str, float]]:
    """Return (LM, metrics) from a checkpoint; raise ValueError when it is corrupt."""
    tensors, metrics = read_checkpoint(path)
    with torch.random.fork_rng(devices=[]):  # the initialisation draws must not move the caller's stream
        lm = build_backbone(model)
    missing, unexpected = lm.transformer.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if not k.endswith("attn.bias")]:
        raise ValueError(f"keys do not match the model (missing {missing}, unexpected {unexpected})")
    lm.tie_weights()
    return lm.eval(), metrics


def _save(path: Path, lm: torch.nn.Module, key: dict[str, Any], metrics: dict[str, float]) -> None:
    """Write the transformer's weights to `path` atomically (`write_checkpoint`)."""
    write_checkpoint(path, lm.transformer.state_dict(), key, metrics)


def cached_backbone(data_dir: str, model: BackboneConfig, corpus: CorpusConfig,
                    train: PretrainConfig, seed: int) -> Backbone:
    """Return the pretrained backbone of (configs, seed) (`seconds`: the load or the
    pretraining, after the lock was acquired): loaded from
    `<data_dir>/small_lm/backbone-<hash>.safetensors` when present and intact, else pretrained
    now and written there (`tasks.base.checkpoint.cached_module`)."""
    def fit() -> tuple[torch.nn.Module, dict[str, float]]:
        log.info("small_lm: pretraining the backbone (%d layers, d=%d, %d steps, seed %d)",
                 model.n_layers, model.d_model, train.steps, seed)
        lm, metrics = pretrain(model, corpus, train, seed, data_dir)
        log.info("small_lm: held-out next-token accuracy %.3f", metrics["heldout_acc"])
        return lm, metrics

    return cached_module(data_dir, "small_lm", "backbone",
                         backbone_key(model, corpus, train, seed), fit,
                         lambda path: _load(path, model), _save)
