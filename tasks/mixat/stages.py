"""Stage 1 (pretraining on the chat language) and stage 2 (safety SFT: the aligned model), each
trained through a Lightning Trainer and cached once per (config, seed) under
`<data_dir>/mixat/` with tasks.small_lm.cache.cached_lm (file lock, atomic write, corruption
check); the stage-2 key holds the stage-1 key, so a new stage 1 retrains stage 2. The key also
holds the hash of this module's source and of the modules it uses (the language), not the
attacks' or the defences' code.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tasks.base.data import cached_tensors, data_code_hash
from tasks.base.streams import ShuffledBatches, fit_position
from tasks.mixat import language as L
from tasks.small_lm.cache import cached_lm
from tasks.small_lm.config import BackboneConfig
from tasks.small_lm.model import build_backbone
from tasks.small_lm.pretrain import Backbone

HELD_OUT = 512  # documents of each stage kept out of training (its held-out loss)


@dataclass(frozen=True)
class StageConfig:
    """One training stage: documents generated, optimiser steps, batch, AdamW learning rate."""

    n_docs: int = 16000
    steps: int = 400
    batch_size: int = 64
    lr: float = 1.0e-3


def lexicon(lang: L.Language, seed: int) -> dict[str, np.ndarray]:
    """Return the aliases and contents of (language, seed): the first draw of the seed."""
    return L.draw_lexicon(lang, np.random.default_rng(seed))


def stage_docs(lang: L.Language, stage: int, n: int, seed: int, data_dir: str) -> dict[str, torch.Tensor]:
    """Return the cached documents of a stage (tokens, lengths, response_start, kind)."""
    key = {"part": f"stage{stage}-docs", "seed": int(seed), "n": int(n), **asdict(lang),
           "code": data_code_hash(sys.modules[__name__])}

    def build() -> dict[str, torch.Tensor]:
        docs = L.documents(lang, lexicon(lang, seed), n, stage,
                           np.random.default_rng((seed, stage)))
        return {k: torch.from_numpy(v) for k, v in docs.items()}

    return cached_tensors(data_dir, "mixat", key, build, part=f"stage{stage}-docs")


def target_mask(docs: dict[str, torch.Tensor], response_only: bool) -> torch.Tensor:
    """Return (n, seq_len) bool: the positions whose token is a training target (non-pad; with
    response_only, only the response tokens)."""
    pos = torch.arange(docs["tokens"].shape[1])[None, :]
    mask = pos < docs["lengths"][:, None]
    if response_only:
        mask &= pos >= docs["response_start"][:, None]
    return mask


def masked_lm_loss(lm: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (mean CE, accuracy) of predicting the tokens where `mask` is true (position ≥ 1)
    from the tokens before them."""
    logits = lm(input_ids=tokens).logits[:, :-1]
    keep = mask[:, 1:]
    target = tokens[:, 1:][keep]
    loss = F.cross_entropy(logits[keep], target)
    return loss, (logits[keep].argmax(-1) == target).float().mean()


class StageModule(pl.LightningModule):
    """Next-token CE on the masked positions of the documents (AdamW, constant lr)."""

    def __init__(self, lm: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor,
                 cfg: StageConfig) -> None:
        super().__init__()
        self.lm, self.tokens, self.mask, self.cfg = lm, tokens, mask, cfg
        self.losses: list[float] = []

    def train_dataloader(self) -> ShuffledBatches:
        return ShuffledBatches(self.tokens.shape[0], self.cfg.batch_size,
                               lambda rows: (self.tokens[rows], self.mask[rows]),
                               lambda: fit_position(self.trainer))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, _ = masked_lm_loss(self.lm, *batch)
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.lm.parameters(), lr=self.cfg.lr, weight_decay=0.01)


def train_stage(lm: torch.nn.Module, docs: dict[str, torch.Tensor], cfg: StageConfig,
                response_only: bool, seed: int) -> tuple[torch.nn.Module, dict[str, float]]:
    """Train `lm` for cfg.steps on all but the last HELD_OUT documents under torch seed `seed`
    in a forked RNG (the caller's streams are untouched); return (lm in eval mode, metrics:
    final_loss, heldout_loss, heldout_acc on the masked positions)."""
    mask = target_mask(docs, response_only)
    n_train = max(1, docs["tokens"].shape[0] - HELD_OUT)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm.train()
        module = StageModule(lm, docs["tokens"][:n_train], mask[:n_train], cfg)
        if cfg.steps > 0:
            trainer = pl.Trainer(max_steps=cfg.steps, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False,
                                 accelerator="cpu", devices=1, num_sanity_val_steps=0,
                                 callbacks=[], deterministic=True)
            trainer.fit(module)
    lm.eval()
    held = slice(n_train, None) if docs["tokens"].shape[0] > n_train else slice(None)
    with torch.no_grad():
        loss, acc = masked_lm_loss(lm, docs["tokens"][held], mask[held])
    tail = module.losses[-50:]
    return lm, {"final_loss": float(np.mean(tail)) if tail else float("nan"),
                "heldout_loss": float(loss), "heldout_acc": float(acc)}


def stage1_key(lang: L.Language, model: BackboneConfig, cfg: StageConfig, seed: int) -> dict[str, Any]:
    return {"part": "stage1", "seed": int(seed), "language": asdict(lang), "model": asdict(model),
            "stage1": asdict(cfg), "code": data_code_hash(sys.modules[__name__])}


def stage2_key(lang: L.Language, model: BackboneConfig, s1: StageConfig, s2: StageConfig,
               seed: int) -> dict[str, Any]:
    return {"part": "stage2", "stage1_key": stage1_key(lang, model, s1, seed),
            "stage2": asdict(s2), "seed": int(seed)}


def cached_stage1(data_dir: str, lang: L.Language, model: BackboneConfig, cfg: StageConfig,
                  seed: int) -> Backbone:
    """Return the pretrained chat LM of (language, model, stage config, seed)."""
    def train() -> tuple[torch.nn.Module, dict[str, float]]:
        docs = stage_docs(lang, 1, cfg.n_docs, seed, data_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            lm = build_backbone(model)
        return train_stage(lm, docs, cfg, response_only=False, seed=seed)

    return cached_lm(data_dir, "mixat", "stage1", stage1_key(lang, model, cfg, seed), model, train)


def cached_stage2(data_dir: str, lang: L.Language, model: BackboneConfig, s1: StageConfig,
                  s2: StageConfig, seed: int) -> tuple[Backbone, Backbone]:
    """Return (stage 1, stage 2): the aligned model is stage 1 after safety SFT (response
    tokens only) on stage-2 documents, cached keyed on stage 1's key."""
    first = cached_stage1(data_dir, lang, model, s1, seed)

    def train() -> tuple[torch.nn.Module, dict[str, float]]:
        import copy

        docs = stage_docs(lang, 2, s2.n_docs, seed, data_dir)
        return train_stage(copy.deepcopy(first.lm), docs, s2, response_only=True, seed=seed + 1)

    second = cached_lm(data_dir, "mixat", "stage2", stage2_key(lang, model, s1, s2, seed), model,
                       train)
    return first, second
