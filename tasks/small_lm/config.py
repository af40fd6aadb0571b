"""Sizes of the small LM, its generated corpus and its pretraining: the three parts of the key
under which a pretrained backbone is cached (tasks/small_lm/pretrain.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.validation import ConfigError, check_positive, check_range

MATRICES = ("q", "k", "v")  # the slices of GPT-2's fused c_attn, in its output order


@dataclass(frozen=True)
class BackboneConfig:
    """A causal GPT-2-style model (transformers.GPT2Config, eager attention, no dropout)."""

    vocab_size: int = 96     # corpus tokens 0..vocab_size-1; the pad token is vocab_size
    seq_len: int = 32        # longest sequence (GPT-2 n_positions)
    d_model: int = 64        # hidden width (n_embd)
    n_layers: int = 4        # transformer blocks (n_layer)
    n_heads: int = 4         # attention heads (n_head), divides d_model
    d_ff: int = 128          # MLP width (n_inner)

    def __post_init__(self) -> None:
        for key in ("vocab_size", "seq_len", "d_model", "n_layers", "n_heads", "d_ff"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        if self.d_model % self.n_heads:
            raise ConfigError(f"task.d_model={self.d_model} is not a multiple of "
                              f"task.n_heads={self.n_heads}", key="task.d_model")

    @property
    def pad_id(self) -> int:
        """Return the id of the padding token (one past the corpus tokens)."""
        return self.vocab_size


@dataclass(frozen=True)
class CorpusConfig:
    """K topics, each a first-order Markov chain on its own token subset, with key bigrams."""

    n_topics: int = 8          # K topic chains
    topic_tokens: int = 48     # tokens each topic's chain moves on (a random subset of the vocab)
    concentration: float = 0.3  # Dirichlet concentration of each transition row (smaller: peakier)
    key_bigrams: int = 2       # key-phrase bigrams per topic
    key_prob: float = 0.1      # per position, the probability that a key bigram is inserted
    min_len: int = 16          # shortest document (tokens)
    n_docs: int = 20000        # documents of the pretraining corpus

    def __post_init__(self) -> None:
        check_range("task.n_topics", self.n_topics, 2, None)
        check_range("task.topic_tokens", self.topic_tokens, 4, None)
        check_positive("task.concentration", self.concentration)
        check_range("task.key_bigrams", self.key_bigrams, 1, None)
        check_range("task.key_prob", self.key_prob, 0.0, 1.0)
        check_range("task.min_len", self.min_len, 2, None)
        check_range("task.n_docs", self.n_docs, 1, None)


@dataclass(frozen=True)
class PretrainConfig:
    """Next-token-prediction pretraining (AdamW, constant learning rate)."""

    steps: int = 800           # optimiser steps
    batch_size: int = 32       # documents per step
    lr: float = 3.0e-3         # AdamW learning rate

    def __post_init__(self) -> None:
        check_range("task.pretrain_steps", self.steps, 0, None)
        check_range("task.pretrain_batch", self.batch_size, 1, None)
        check_positive("task.pretrain_lr", self.lr)


def as_key(*configs: Any) -> dict[str, Any]:
    """Return the fields of the given dataclasses as one dict, each prefixed by its class."""
    out: dict[str, Any] = {}
    for cfg in configs:
        prefix = type(cfg).__name__.removesuffix("Config").lower()
        out.update({f"{prefix}.{k}": v for k, v in dataclasses.asdict(cfg).items()})
    return out


def check_lora_choice(layers: Sequence[int], matrices: Sequence[str], n_layers: int) -> None:
    """Raise ConfigError unless every layer is in 0..n_layers−1 and every matrix in MATRICES
    (both non-empty, no repeats)."""
    bad = [int(i) for i in layers if not 0 <= int(i) < n_layers]
    if bad or not layers or len(set(layers)) != len(layers):
        raise ConfigError(f"task.lora_layers={list(layers)} is not allowed: the backbone has "
                          f"layers 0..{n_layers - 1} (distinct, at least one; null = all)",
                          key="task.lora_layers")
    bad_m = [m for m in matrices if m not in MATRICES]
    if bad_m or not matrices or len(set(matrices)) != len(matrices):
        raise ConfigError(f"task.lora_matrices={list(matrices)} is not allowed: choose a "
                          f"non-empty subset of the backbone's attention matrices "
                          f"{', '.join(MATRICES)}", key="task.lora_matrices")
