"""The mixat data module: the draw of one seed (test and training behaviours, benign
evaluation prompts, the utility set of the defences, a held-out set for the LM loss) and the
two cached models (stage 1 pretrained, stage 2 aligned; tasks/mixat/stages.py).

The train loader serves (rows, tokens, mask) batches of the utility set (batch_size − n_adv
rows, one shuffled pass per epoch, resumable); the module adds the step's adversarial
behaviours itself. The utility set's framed benign requests use the training frames only, so
the held-out frames appear nowhere in defence training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tasks.base import TensorDataModule
from tasks.base.streams import ShuffledBatches, fit_position
from tasks.mixat import language as L
from tasks.mixat.stages import cached_stage2, lexicon, target_mask
from tasks.small_lm.pretrain import Backbone

BENIGN_CONTEXTS = 2  # benign evaluation prompts per benign topic
HELD_OUT_DOCS = 512  # stage-2-style documents of the held-out LM loss


class MixatData(TensorDataModule):
    """`tensors`: the draw; `stage1`, `stage2`: the cached models (after setup)."""

    stage1: Backbone | None = None
    stage2: Backbone | None = None

    def generating_config(self) -> dict[str, Any]:
        c = self.cfg
        return {"language": vars(c.language()), "test_contexts": c.test_contexts,
                "train_contexts": c.train_contexts, "n_utility": c.n_utility,
                "train_frames": [int(f) for f in c.train_frames]}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        lang = c.language()
        lex = lexicon(lang, self.seed)
        rng = np.random.default_rng((self.seed, 3))
        test = L.behaviours(lang.test_topics, L.contexts(lang, c.test_contexts, rng))
        train = L.behaviours(lang.train_topics, L.contexts(lang, c.train_contexts, rng))
        benign = L.behaviours(lang.benign, L.contexts(lang, BENIGN_CONTEXTS, rng))
        n_b = len(benign["topic"])
        benign_frame = lang.frames[np.arange(n_b) % lang.n_frames]
        util = L.documents(lang, lex, c.n_utility, 2, rng, frames=lang.frames[list(c.train_frames)])
        held = L.documents(lang, lex, HELD_OUT_DOCS, 2, rng)
        t = torch.from_numpy
        out = {"alias": t(lex["alias"]), "content": t(lex["content"]),
               "test_topic": t(test["topic"]), "test_context": t(test["context"]),
               "train_topic": t(train["topic"]), "train_context": t(train["context"]),
               "benign_topic": t(benign["topic"]), "benign_context": t(benign["context"]),
               "benign_frame": t(benign_frame.astype(np.int64))}
        for name, docs in (("util", util), ("held", held)):
            docs = {k: t(v) for k, v in docs.items()}
            out[f"{name}_tokens"] = docs["tokens"]
            out[f"{name}_mask"] = target_mask(docs, response_only=True)
        return out

    def lexicon(self) -> dict[str, np.ndarray]:
        """Return the draw's aliases and contents as numpy arrays."""
        return {"alias": self.tensors["alias"].numpy(), "content": self.tensors["content"].numpy()}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.stage2 is None and stage != "prepare":
            c = self.cfg
            s1, s2 = c.stage_configs()
            self.stage1, self.stage2 = cached_stage2(self.data_dir, c.language(),
                                                     c.backbone_config(), s1, s2, self.seed)

    def train_dataloader(self) -> ShuffledBatches:
        """Return (rows, tokens, mask) utility batches (one shuffled pass per epoch, resumable)."""
        t = self.tensors
        n = int(t["util_tokens"].shape[0])
        size = min(max(1, self.cfg.batch_size - self.cfg.n_adv), n)

        def gather(rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return rows, t["util_tokens"][rows], t["util_mask"][rows]

        return ShuffledBatches(n, size, gather, lambda: fit_position(self.trainer))
