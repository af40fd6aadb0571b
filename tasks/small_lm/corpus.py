"""The generated corpus: K topics, each a first-order Markov chain on its own token subset, with
key-phrase bigrams inserted; documents of random length, right-padded.

`draw_chains(cfg, vocab_size, rng)` draws the topics (token subsets, initial and transition
distributions, key bigrams); `sample_documents` draws documents from them. Everything is a
pure function of the numpy generator, so (config, seed) fixes the corpus. The corpus is a token
tensor in the project's one safetensors cache (tasks.base.data.cached_tensors), not a
`datasets.Dataset`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tasks.base.data import cached_tensors
from tasks.small_lm.config import BackboneConfig, CorpusConfig, as_key

Chains = dict[str, np.ndarray]


def draw_chains(cfg: CorpusConfig, vocab_size: int, rng: np.random.Generator) -> Chains:
    """Return the topics: tokens (K, m) (each topic's token subset, m = topic_tokens), init
    (K, m) and trans (K, m, m) Dirichlet(concentration) distributions over local indices, keys
    (K, key_bigrams, 2) key bigrams as local indices."""
    m = min(cfg.topic_tokens, vocab_size)
    K = cfg.n_topics
    tokens = np.stack([rng.choice(vocab_size, m, replace=False) for _ in range(K)])
    alpha = np.full(m, cfg.concentration)
    init = rng.dirichlet(alpha, size=K)
    trans = rng.dirichlet(alpha, size=(K, m))
    keys = rng.integers(m, size=(K, cfg.key_bigrams, 2))
    return {"tokens": tokens, "init": init, "trans": trans, "keys": keys}


def _draw(cum: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return one index per row of the cumulative distributions `cum` (n, m)."""
    u = rng.random((cum.shape[0], 1))
    return np.minimum((u > cum).sum(axis=1), cum.shape[1] - 1)


def sample_documents(chains: Chains, n: int, seq_len: int, min_len: int, key_prob: float,
                     pad_id: int, rng: np.random.Generator,
                     topics: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Return n documents: tokens (n, seq_len) int64 (pad_id after each document's length),
    lengths (n,) uniform in [min_len, seq_len], topics (n,) (uniform unless given). Each
    position continues its topic's chain; with probability key_prob a key bigram (a, b) of the
    topic is emitted instead (a here, b next), and the chain continues from b."""
    K, m = chains["tokens"].shape
    z = rng.integers(K, size=n) if topics is None else np.asarray(topics)
    lengths = rng.integers(min(min_len, seq_len), seq_len + 1, size=n)
    init_cum, trans_cum = np.cumsum(chains["init"], -1), np.cumsum(chains["trans"], -1)
    keys = chains["keys"]
    local = np.empty((n, seq_len), dtype=np.int64)
    pending = np.full(n, -1)
    prev = None
    for t in range(seq_len):
        cur = _draw(init_cum[z], rng) if prev is None else _draw(trans_cum[z, prev], rng)
        cur = np.where(pending >= 0, pending, cur)
        start = (pending < 0) & (rng.random(n) < key_prob) & (t < seq_len - 1)
        which = rng.integers(keys.shape[1], size=n)
        cur = np.where(start, keys[z, which, 0], cur)
        pending = np.where(start, keys[z, which, 1], -1)
        local[:, t] = cur
        prev = cur
    tokens = chains["tokens"][z[:, None], local]
    tokens[np.arange(seq_len)[None, :] >= lengths[:, None]] = pad_id
    return {"tokens": tokens.astype(np.int64), "lengths": lengths.astype(np.int64),
            "topics": z.astype(np.int64)}


def chains_of(cfg: CorpusConfig, backbone: BackboneConfig, seed: int) -> Chains:
    """Return the topic chains of (corpus config, seed): the first draw of the seed's generator
    (the pretraining corpus and every downstream set of this seed share them)."""
    return draw_chains(cfg, backbone.vocab_size, np.random.default_rng(seed))


def build_corpus(cfg: CorpusConfig, backbone: BackboneConfig, seed: int) -> dict[str, torch.Tensor]:
    """Return the pretraining corpus of (config, seed): tokens, lengths, topics (n_docs rows)."""
    rng = np.random.default_rng(seed)
    chains = draw_chains(cfg, backbone.vocab_size, rng)
    docs = sample_documents(chains, cfg.n_docs, backbone.seq_len, cfg.min_len, cfg.key_prob,
                            backbone.pad_id, rng)
    return {k: torch.from_numpy(v) for k, v in docs.items()}


def corpus_key(cfg: CorpusConfig, backbone: BackboneConfig, seed: int) -> dict[str, Any]:
    """Return the cache key of the corpus: its config, the vocabulary and length, the seed."""
    return {"part": "corpus", "seed": int(seed), **as_key(cfg),
            "vocab_size": backbone.vocab_size, "seq_len": backbone.seq_len,
            "code": _code_hash()}


def _code_hash() -> str:
    from tasks.base.data import data_code_hash

    return data_code_hash(build_corpus)


def cached_corpus(data_dir: str, cfg: CorpusConfig, backbone: BackboneConfig,
                  seed: int) -> dict[str, torch.Tensor]:
    """Return the corpus from `<data_dir>/small_lm/corpus-<hash>.safetensors` (built once)."""
    return cached_tensors(data_dir, "small_lm", corpus_key(cfg, backbone, seed),
                          lambda: build_corpus(cfg, backbone, seed), part="corpus")
