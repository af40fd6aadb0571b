"""The four downstream classification sets, drawn from the pretraining corpus's topic chains
with fresh documents (a generator seeded by (seed, task index), not the corpus's own draw).

topic:     the document's topic (K classes; easy, near the ceiling even untrained)
bigram:    whether a given bigram (a, b) occurs anywhere (inserted into half the documents)
count:     count(a) > count(b) for the two most frequent tokens of the corpus (documents with
           equal counts are redrawn)
sentiment: sign of Σ_t w(x_t)/√L + σ·ε, per-token lexicon scores w ~ N(0, 1), ε ~ N(0, 1)
"""

from __future__ import annotations

import numpy as np

from tasks.small_lm.corpus import Chains, sample_documents

DOWNSTREAMS = ("count", "sentiment", "topic", "bigram")
PILOT_DOCS = 2000  # documents drawn to find the two most frequent tokens (count)


def n_classes(kind: str, n_topics: int) -> int:
    """Return the number of classes: n_topics for topic, 2 otherwise."""
    return n_topics if kind == "topic" else 2


def downstream_set(kind: str, chains: Chains, n: int, seq_len: int, min_len: int,
                   key_prob: float, pad_id: int, vocab_size: int, label_noise: float,
                   seed: int) -> dict[str, np.ndarray]:
    """Return {tokens (n, seq_len), lengths, labels (n,) int64} of one downstream set."""
    rng = np.random.default_rng([int(seed), 1 + DOWNSTREAMS.index(kind)])
    docs = sample_documents(chains, n, seq_len, min_len, key_prob, pad_id, rng)
    tokens, lengths = docs["tokens"], docs["lengths"]
    if kind == "topic":
        labels = docs["topics"]
    elif kind == "bigram":
        a, b = rng.choice(vocab_size, 2, replace=False)
        insert = rng.random(n) < 0.5
        pos = (rng.random(n) * (lengths - 1)).astype(np.int64)
        rows = np.nonzero(insert)[0]
        tokens[rows, pos[rows]], tokens[rows, pos[rows] + 1] = a, b
        labels = ((tokens[:, :-1] == a) & (tokens[:, 1:] == b)).any(axis=1).astype(np.int64)
    elif kind == "count":
        pilot = sample_documents(chains, PILOT_DOCS, seq_len, min_len, key_prob, pad_id, rng)
        freq = np.bincount(pilot["tokens"][pilot["tokens"] != pad_id], minlength=vocab_size)
        a, b = np.argsort(-freq[:vocab_size], kind="stable")[:2]
        tokens, lengths, diff = _untied_counts(docs, a, b, pad_id, n, lambda m: sample_documents(
            chains, m, seq_len, min_len, key_prob, pad_id, rng))
        labels = (diff > 0).astype(np.int64)
    else:  # sentiment
        w = rng.standard_normal(vocab_size + 1)
        w[pad_id] = 0.0
        score = w[tokens].sum(1) / np.sqrt(lengths) + label_noise * rng.standard_normal(n)
        labels = (score > 0).astype(np.int64)
    return {"tokens": tokens.astype(np.int64), "lengths": lengths.astype(np.int64),
            "labels": labels.astype(np.int64)}


def _untied_counts(docs: dict[str, np.ndarray], a: int, b: int, pad_id: int, n: int, draw
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (tokens, lengths, count(a) − count(b)) of the first n documents whose counts of a
    and b differ, drawing more documents with `draw(m)` until there are n."""
    toks, lens, diffs, have = [], [], [], 0
    while have < n:
        d = (docs["tokens"] == a).sum(1) - (docs["tokens"] == b).sum(1)
        keep = d != 0
        toks.append(docs["tokens"][keep])
        lens.append(docs["lengths"][keep])
        diffs.append(d[keep])
        have += int(keep.sum())
        docs = draw(2 * n)
    return (np.concatenate(toks)[:n], np.concatenate(lens)[:n], np.concatenate(diffs)[:n])
