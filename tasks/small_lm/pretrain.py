"""Next-token pretraining of the small LM through a Lightning Trainer, once per (backbone
config, corpus config, pretraining config, seed), cached under `<data_dir>/small_lm/`.

`cached_backbone` holds an exclusive file lock (fcntl) on `<file>.lock` while it looks for the
checkpoint and, when it is absent or corrupt, trains and writes it (temporary file + rename):
two jobs of a parallel sweep never both train it and never read a half-written file; the second
waits, then loads. The checkpoint is a safetensors file of the transformer's weights whose
metadata holds the generating key, a SHA-1 of the tensors (a truncated or altered file fails
the check, is reported in the log and rebuilt) and the pretraining metrics.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tasks.base.data import config_hash, data_code_hash
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


@dataclass
class Backbone:
    """A pretrained LM: the model (eval mode), whether it came from the cache, the seconds the
    load or the pretraining took, the checkpoint path and the pretraining metrics."""

    lm: torch.nn.Module
    loaded: bool
    seconds: float
    path: Path
    metrics: dict[str, float]


def backbone_key(model: BackboneConfig, corpus: CorpusConfig, train: PretrainConfig,
                 seed: int) -> dict[str, Any]:
    """Return the cache key: the three configs, the seed and the hash of the small-LM code."""
    return {"part": "backbone", "seed": int(seed), **as_key(model, corpus, train),
            "code": data_code_hash(sys.modules[__name__])}


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    """Return the SHA-1 of the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha1()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types on a truncated header
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if meta.get("sha1") != _digest(tensors):
        raise ValueError("its SHA-1 does not match the one it was written with")
    with torch.random.fork_rng(devices=[]):  # the initialisation draws must not move the caller's stream
        lm = build_backbone(model)
    missing, unexpected = lm.transformer.load_state_dict(tensors, strict=False)
    if unexpected or [k for k in missing if not k.endswith("attn.bias")]:
        raise ValueError(f"keys do not match the model (missing {missing}, unexpected {unexpected})")
    lm.tie_weights()
    return lm.eval(), json.loads(meta.get("metrics", "{}"))


def _save(path: Path, lm: torch.nn.Module, key: dict[str, Any], metrics: dict[str, float]) -> None:
    """Write the transformer's weights to `path` atomically (temporary file, then rename)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone()
               for k, v in lm.transformer.state_dict().items()}
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    save_file(tensors, str(tmp), metadata={"sha1": _digest(tensors), "metrics": json.dumps(metrics),
                                           "key": json.dumps(key, sort_keys=True, default=str)})
    path.with_suffix(".json").write_text(json.dumps({**key, "metrics": metrics}, indent=2,
                                                    default=str))
    os.replace(tmp, path)


def cached_backbone(data_dir: str, model: BackboneConfig, corpus: CorpusConfig,
                    train: PretrainConfig, seed: int) -> Backbone:
    """Return the pretrained backbone of (configs, seed) (`seconds`: the load or the
    pretraining, after the lock was acquired): loaded from
    `<data_dir>/small_lm/backbone-<hash>.safetensors` when present and intact, else pretrained
    now and written there (under the file lock; a corrupt file is reported and rebuilt)."""
    key = backbone_key(model, corpus, train, seed)
    path = Path(data_dir) / "small_lm" / f"backbone-{config_hash(key)}.safetensors"
    asked = time.perf_counter()
    with file_lock(path.with_suffix(".lock")):
        start = time.perf_counter()  # after the lock: another job may have held it to train
        if start - asked > 1.0:
            log.info("small_lm: waited %.1f s for another job's lock on %s", start - asked, path)
        if path.exists():
            try:
                lm, metrics = _load(path, model)
                seconds = time.perf_counter() - start
                log.info("small_lm: loaded the cached backbone %s in %.2f s", path, seconds)
                return Backbone(lm, True, seconds, path, metrics)
            except ValueError as err:
                log.warning("small_lm: the cached backbone %s is corrupt (%s): rebuilding it",
                            path, err)
                path.unlink(missing_ok=True)
        log.info("small_lm: pretraining the backbone (%d layers, d=%d, %d steps, seed %d) -> %s",
                 model.n_layers, model.d_model, train.steps, seed, path)
        lm, metrics = pretrain(model, corpus, train, seed, data_dir)
        _save(path, lm, key, metrics)
    seconds = time.perf_counter() - start
    log.info("small_lm: pretrained in %.1f s (held-out next-token accuracy %.3f)", seconds,
             metrics["heldout_acc"])
    return Backbone(lm, False, seconds, path, metrics)
