"""The data of mamba_modulation: a byte corpus of the Python standard library's own sources
(`lm`) or a synthetic passkey task (`passkey`), and the cached backbone trained on it.

- `lm`: the `.py` files under `sysconfig.get_paths()["stdlib"]` (site-packages left out), in
  sorted path order, concatenated to `corpus_bytes` bytes and split 95/5 by position. Training
  windows are drawn from the first part; evaluation and calibration windows at length L are
  disjoint non-overlapping chunks of the second part (a seeded permutation of the chunks: the
  first `eval_sequences` evaluate, the next `calib_sequences` calibrate).
- `passkey`: filler from a first-order Markov chain over `filler_states` tokens (initial and
  transition distributions drawn once from the seed, cached); a needle `KEY d1 d2` at a depth
  in [0, 1] of the filler; the sequence ends with `QUERY d1 d2`.

Every draw comes from its own explicit `torch.Generator`, seeded from (run seed, purpose,
length, step) by `derived_seed`: training, evaluation and calibration never share or depend
on torch's global stream (a probe found that an unseeded filler chain made evaluation use
another distribution than training).
"""

from __future__ import annotations

import hashlib
import os
import sys
import sysconfig
from pathlib import Path
from typing import Any

import torch

from tasks.base import TensorDataModule
from tasks.base.streams import IndexedBatches, fit_position
from tasks.mamba_modulation.config import Config

VALID_FRAC = 0.05  # lm: the last 5 % of the corpus by position: evaluation and calibration
NEEDLE = 3         # passkey: KEY d1 d2
QUERY = 3          # passkey: QUERY d1 d2 at the end


def derived_seed(seed: int, *tags: Any) -> int:
    """Return a 63-bit seed from the run seed and tags (SHA-1 of their text)."""
    text = "/".join(str(t) for t in (seed, *tags))
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *tags: Any) -> torch.Generator:
    """Return a CPU generator seeded with `derived_seed(seed, *tags)`."""
    return torch.Generator().manual_seed(derived_seed(seed, *tags))


# ----------------------------------------------------------------------------- lm corpus
def stdlib_sources() -> list[Path]:
    """Return the standard library's `.py` files (site-packages excluded), sorted by path."""
    found = []
    for folder, subfolders, files in os.walk(sysconfig.get_paths()["stdlib"]):
        # prune installed packages instead of walking them (100x faster than rglob + filter)
        subfolders[:] = [d for d in subfolders if d not in ("site-packages", "dist-packages")]
        found += [Path(folder) / f for f in files if f.endswith(".py")]
    return sorted(found)


def stdlib_corpus(n_bytes: int) -> torch.Tensor:
    """Return the first `n_bytes` bytes of the concatenated stdlib sources (uint8)."""
    chunks, total = [], 0
    for path in stdlib_sources():
        try:
            data = path.read_bytes()
        except OSError:
            continue
        chunks.append(data)
        total += len(data)
        if total >= n_bytes:
            break
    blob = b"".join(chunks)[:n_bytes]
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8).clone()


def random_windows(text: torch.Tensor, length: int, n: int, gen: torch.Generator
                   ) -> torch.Tensor:
    """Return n windows of length + 1 bytes at uniform random starts of `text` (int64)."""
    starts = torch.randint(0, text.numel() - length - 1, (n,), generator=gen)
    idx = starts[:, None] + torch.arange(length + 1)
    return text[idx].long()


def disjoint_windows(text: torch.Tensor, length: int, n_eval: int, n_calib: int,
                     gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (eval (n_eval, length + 1), calib (n_calib, length + 1)) int64 windows: distinct
    non-overlapping chunks of `text` in a random order (so no byte is in both sets)."""
    span = length + 1
    n_chunks = text.numel() // span
    if n_chunks < n_eval + n_calib:
        raise ValueError(f"the held-out text ({text.numel()} bytes) holds {n_chunks} windows of "
                         f"{span} bytes; {n_eval} + {n_calib} are needed: raise task.corpus_bytes")
    order = torch.randperm(n_chunks, generator=gen)[:n_eval + n_calib]
    idx = order[:, None] * span + torch.arange(span)
    windows = text[idx].long()
    return windows[:n_eval], windows[n_eval:]


# ----------------------------------------------------------------------------- passkey
def passkey_chain(filler_states: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Return the filler chain: `initial` (F,) and `transition` (F, F), each row drawn from
    Dirichlet(1, …, 1) (normalised Exp(1) draws: −log U) of the explicit generator."""
    def draw(rows: int) -> torch.Tensor:
        g = -torch.log(torch.rand(rows, filler_states, generator=gen).clamp_min(1e-12))
        return g / g.sum(-1, keepdim=True)
    return {"initial": draw(1)[0], "transition": draw(filler_states)}


def passkey_tokens(filler_states: int) -> dict[str, int]:
    """Return the token ids: digits start at F, KEY = F + 10, QUERY = F + 11."""
    return {"digit0": filler_states, "key": filler_states + 10, "query": filler_states + 11}


def passkey_batch(chain: dict[str, torch.Tensor], length: int, n: int, gen: torch.Generator,
                  depths: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Return n passkey sequences of `length` tokens: tokens (n, length) int64 and depth (n,)
    in [0, 1]. Filler follows the chain; the needle KEY d1 d2 starts at position
    round(depth · (length − 6)); the last three tokens are QUERY d1 d2 (digits uniform)."""
    F_ = chain["transition"].shape[0]
    ids = passkey_tokens(F_)
    cum_init = chain["initial"].cumsum(0)
    cum_trans = chain["transition"].cumsum(-1)
    u = torch.rand(n, length, generator=gen)
    tokens = torch.empty(n, length, dtype=torch.long)
    state = torch.searchsorted(cum_init, u[:, :1].contiguous()).squeeze(1).clamp_max(F_ - 1)
    tokens[:, 0] = state
    for t in range(1, length):
        state = torch.searchsorted(cum_trans[state], u[:, t:t + 1].contiguous()).squeeze(1)
        state = state.clamp_max(F_ - 1)
        tokens[:, t] = state
    if depths is None:
        depths = torch.rand(n, generator=gen)
    digits = torch.randint(0, 10, (n, 2), generator=gen) + ids["digit0"]
    room = length - NEEDLE - QUERY
    start = torch.round(depths * room).long().clamp(0, room)
    rows = torch.arange(n)
    tokens[rows, start] = ids["key"]
    tokens[rows, start + 1] = digits[:, 0]
    tokens[rows, start + 2] = digits[:, 1]
    tokens[:, -3] = ids["query"]
    tokens[:, -2:] = digits
    return {"tokens": tokens, "depth": depths.float()}


def depth_grid(n_depths: int) -> torch.Tensor:
    """Return n_depths needle depths spread evenly over [0, 1] (0.5 for one)."""
    return torch.linspace(0, 1, n_depths) if n_depths > 1 else torch.tensor([0.5])


# ----------------------------------------------------------------------------- data module
class MambaModulationData(TensorDataModule):
    """The cached draw (lm: corpus `train` / `valid` bytes; passkey: the filler chain), the
    per-step training batches, the disjoint evaluation / calibration sets per length, and the
    backbone (`backbone`, a `pretrain.Backbone`, trained once per configs and seed)."""

    backbone: Any = None

    def __init__(self, params: Config, data_dir: str, seed: int) -> None:
        super().__init__(params, data_dir, seed)
        self._sets: dict[int, tuple[torch.Tensor, ...]] = {}

    def generating_config(self) -> dict[str, Any]:
        c = self.cfg
        if c.setting == "lm":
            return {"setting": "lm", "corpus_bytes": c.corpus_bytes,
                    "python": sys.version.split()[0], "stdlib_files": len(stdlib_sources())}
        return {"setting": "passkey", "filler_states": c.filler_states}

    def build(self) -> dict[str, torch.Tensor]:
        c = self.cfg
        if c.setting == "lm":
            text = stdlib_corpus(c.corpus_bytes)
            cut = int(round(text.numel() * (1 - VALID_FRAC)))
            return {"train": text[:cut].clone(), "valid": text[cut:].clone()}
        return passkey_chain(c.filler_states, generator(self.seed, "chain"))

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.backbone is None and stage != "prepare":
            from tasks.mamba_modulation.pretrain import cached_backbone

            self.backbone = cached_backbone(self.data_dir, self.cfg, self, self.seed)

    # ------------------------------------------------------------------ draws
    def train_batch(self, step: int) -> torch.Tensor:
        """Return the training batch of `step`: (batch_size, train_len + 1) lm windows, or
        (batch_size, train_len) passkey sequences; a pure function of (seed, step)."""
        c, gen = self.cfg, generator(self.seed, "train", step)
        if c.setting == "lm":
            return random_windows(self.tensors["train"], c.train_len, c.batch_size, gen)
        return passkey_batch(self.tensors, c.train_len, c.batch_size, gen)["tokens"]

    def eval_sets(self, length: int) -> tuple[torch.Tensor, ...]:
        """Return (evaluation, calibration) sets at `length`, disjoint, from their own seeded
        generators. lm: windows (n, length + 1). passkey: (eval tokens, eval depths, calib
        tokens), the evaluation needles at `n_depths` evenly spread depths."""
        if length in self._sets:
            return self._sets[length]
        c = self.cfg
        if c.setting == "lm":
            out = disjoint_windows(self.tensors["valid"], length, c.eval_sequences,
                                   c.calib_sequences, generator(self.seed, "heldout", length))
        else:
            grid = depth_grid(c.n_depths)
            depths = grid.repeat_interleave(-(-c.eval_sequences // c.n_depths))[:c.eval_sequences]
            ev = passkey_batch(self.tensors, length, c.eval_sequences,
                               generator(self.seed, "eval", length), depths)
            cal = passkey_batch(self.tensors, length, c.calib_sequences,
                                generator(self.seed, "calib", length))
            out = (ev["tokens"], ev["depth"], cal["tokens"])
        self._sets[length] = out
        return out

    def train_dataloader(self) -> IndexedBatches:
        """Return one batch per evaluation length (its index): the outer fit calibrates and
        evaluates one length per step (resumable)."""
        n = len(self.cfg.eval_multipliers)
        return IndexedBatches(lambda i: torch.tensor(i), n, lambda: fit_position(self.trainer))
