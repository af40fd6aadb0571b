"""Losses and metrics of both settings (pure torch)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EVAL_BATCH = 8  # sequences per evaluation forward


def lm_loss(lm: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Return the mean next-byte cross-entropy of windows (n, L + 1): inputs [:, :-1],
    targets [:, 1:]."""
    logits = lm(windows[:, :-1])
    return F.cross_entropy(logits.flatten(0, 1), windows[:, 1:].flatten())


def tail_ce_per_sequence(lm: torch.nn.Module, windows: torch.Tensor, tail: int) -> torch.Tensor:
    """Return (n,) the mean cross-entropy of the last min(tail, L) targets of each window
    (n, L + 1), evaluated EVAL_BATCH windows at a time."""
    out = []
    for start in range(0, windows.shape[0], EVAL_BATCH):
        w = windows[start:start + EVAL_BATCH]
        logits = lm(w[:, :-1])[:, -tail:]
        ce = F.cross_entropy(logits.transpose(1, 2), w[:, 1:][:, -tail:], reduction="none")
        out.append(ce.mean(1))
    return torch.cat(out)


def tail_ce(lm: torch.nn.Module, windows: torch.Tensor, tail: int) -> float:
    """Return the tail CE (nats): the mean over windows of `tail_ce_per_sequence`."""
    return float(tail_ce_per_sequence(lm, windows, tail).mean())


def passkey_logits(lm: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Return the logits (n, 2, vocab) predicting the two answer digits: at positions L − 3
    (QUERY → d1) and L − 2 (d1 → d2)."""
    out = []
    for start in range(0, tokens.shape[0], EVAL_BATCH):
        out.append(lm(tokens[start:start + EVAL_BATCH, :-1])[:, -2:])
    return torch.cat(out)


def passkey_loss(lm: torch.nn.Module, tokens: torch.Tensor, lm_weight: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (loss, answer accuracy) of a passkey batch: CE on the two answer digits +
    lm_weight × the mean next-token CE of every other position; accuracy = both digits right."""
    logits = lm(tokens[:, :-1])
    targets = tokens[:, 1:]
    answer = F.cross_entropy(logits[:, -2:].flatten(0, 1), targets[:, -2:].flatten())
    rest = F.cross_entropy(logits[:, :-2].flatten(0, 1), targets[:, :-2].flatten())
    acc = (logits[:, -2:].argmax(-1) == targets[:, -2:]).all(-1).float().mean()
    return answer + lm_weight * rest, acc


def passkey_answers(lm: torch.nn.Module, tokens: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Return (correct (n,) bool: both digits right, mean answer CE)."""
    logits = passkey_logits(lm, tokens)
    targets = tokens[:, -2:]
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    return (logits.argmax(-1) == targets).all(-1), float(ce)
