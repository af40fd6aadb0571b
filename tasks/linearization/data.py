"""The linearization data module: one downstream set (train and test rows, cached) and the
pretrained backbone (tasks.small_lm, cached once per configs and seed under the data dir).

The draw is cached as tokens (n, seq_len) int64 (right-padded), labels int64 and split int8
(0 train, 1 test), n_train + n_test rows. The train loader serves (rows, tokens, labels) of a
shuffled pass per epoch (resumable); `rows` index the train split (the linearized model looks
up its precomputed Jacobian rows).
"""

from __future__ import annotations

from typing import Any

import torch

from tasks.base import TensorDataModule
from tasks.base.streams import ShuffledBatches, fit_position
from tasks.linearization.downstream import downstream_set
from tasks.small_lm.corpus import chains_of
from tasks.small_lm.pretrain import Backbone, cached_backbone


class LinearizationData(TensorDataModule):
    """Serves the downstream train split; `train` / `test` hold its tensors, `backbone` the LM."""

    train: dict[str, torch.Tensor] | None = None
    test: dict[str, torch.Tensor] | None = None
    backbone: Backbone | None = None

    def generating_config(self) -> dict[str, Any]:
        c = self.cfg
        return {"downstream": str(c.downstream), "n_train": c.n_train, "n_test": c.n_test,
                "label_noise": c.label_noise, "vocab_size": c.vocab_size, "seq_len": c.seq_len,
                "corpus": {k: v for k, v in vars(c.corpus_config()).items()}}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        corpus, model = c.corpus_config(), c.backbone_config()
        n = c.n_train + c.n_test
        cols = downstream_set(str(c.downstream), chains_of(corpus, model, self.seed), n,
                              c.seq_len, corpus.min_len, corpus.key_prob, model.pad_id,
                              c.vocab_size, c.label_noise, self.seed)
        split = torch.zeros(n, dtype=torch.int8)
        split[c.n_train:] = 1
        return {"tokens": torch.from_numpy(cols["tokens"]),
                "labels": torch.from_numpy(cols["labels"]), "split": split}

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        tr, te = tensors["split"] == 0, tensors["split"] == 1
        self.train = {"tokens": tensors["tokens"][tr], "labels": tensors["labels"][tr]}
        self.test = {"tokens": tensors["tokens"][te], "labels": tensors["labels"][te]}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.backbone is None and stage != "prepare":
            c = self.cfg
            self.backbone = cached_backbone(self.data_dir, c.backbone_config(),
                                            c.corpus_config(), c.pretrain_config(), self.seed)

    def train_dataloader(self) -> ShuffledBatches:
        """Return (rows, tokens, labels) batches of one shuffled pass per epoch (resumable)."""
        t = self.train

        def gather(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return rows, t["tokens"][rows], t["labels"][rows]

        return ShuffledBatches(int(t["labels"].numel()), min(self.cfg.batch_size,
                                                               int(t["labels"].numel())),
                               gather, lambda: fit_position(self.trainer))
