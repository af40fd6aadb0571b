"""The molecules and spectra of one data config, built once and cached by `TensorDataModule`.

Build (`build_dataset`): RDKit's NCI molecules filtered by `elements` / `max_heavy_atoms`
(`molecules.filter_molecules`), optionally a seeded subset of `max_molecules`, `n_conformers`
ETKDG+MMFF conformers with explicit H per molecule (a failed embedding is skipped and counted),
the rule-based ¹H spectrum and C80 bins (`nmr`), the 80/10/10 split by `split_seed`.

The project keeps one cache (`tasks.base.data.cached_tensors`, one safetensors file keyed by the
generating config and the data code), so the draw is a dict of tensors, not a `datasets.Dataset`;
strings (canonical SMILES, the filter report) are stored as zero-padded uint8 rows
(`encode_strings` / `decode_strings`). The draw depends on `split_seed` only (conformer seeds are
`split_seed·100003 + molecule index`), so every training seed reuses one cached file.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from runner.validation import ConfigError
from tasks.base import TensorDataModule
from tasks.base.streams import IndexedBatches, fit_position
from tasks.chefnmr.config import ATOM_TYPES, Config
from tasks.chefnmr.molecules import (
    canonical_smiles,
    embed_conformers,
    filter_molecules,
    load_nci,
    split_indices,
)
from tasks.chefnmr.nmr import c80_vector, c_grid, carbon_shifts, h_spectrum

log = logging.getLogger(__name__)
CONFORMER_SEED_STRIDE = 100003


def encode_strings(strings: list[str]) -> torch.Tensor:
    """Return a uint8 tensor (n, max_len) of the ASCII bytes of each string, zero-padded."""
    width = max([len(s) for s in strings] + [1])
    out = np.zeros((len(strings), width), dtype=np.uint8)
    for i, s in enumerate(strings):
        raw = s.encode("ascii")
        out[i, :len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return torch.from_numpy(out)


def decode_strings(table: torch.Tensor) -> list[str]:
    """Return the strings of a uint8 table from `encode_strings` (trailing zeros dropped)."""
    return [bytes(row[row > 0].tolist()).decode("ascii") for row in table.to(torch.uint8)]


def duplicate_spectrum_rate(h: np.ndarray, c: np.ndarray, decimals: int = 5) -> float:
    """Return the fraction of molecules whose (¹H, ¹³C) spectra, rounded to `decimals`, equal
    those of at least one other molecule of the set (all molecules are distinct SMILES)."""
    keys = [np.round(hi, decimals).tobytes() + np.asarray(ci).tobytes() for hi, ci in zip(h, c)]
    counts = Counter(keys)
    return float(sum(counts[k] > 1 for k in keys)) / max(len(keys), 1)


def build_dataset(cfg: Config, progress: bool = True) -> dict[str, torch.Tensor]:
    """Return the draw of `cfg` as tensors:
    coords float32 (M, K, A, 3) Å (K conformers, A = most atoms, zero-padded), atom_types int8
    (M, A) index into ATOM_TYPES (−1 = padding), n_atoms int16 (M,), h_spectrum float32
    (M, h_points), c_spectrum uint8 (M, 80) for c80 or float32 (M, c_points) for grid, smiles
    uint8 (M, L), split int8 (M,) 0/1/2 = train/val/test, and scalars n_filtered,
    n_embed_failed, duplicate_spectrum_rate, build_seconds, plus filter_report (uint8 text)."""
    if cfg.shift_predictor != "rules":
        raise ConfigError("task.shift_predictor=csp5 is not built yet (an optional extra, never "
                          "a default dependency); allowed now: rules", key="task.shift_predictor")
    start = time.perf_counter()
    mols, report = filter_molecules(load_nci(), list(cfg.elements), cfg.max_heavy_atoms)
    if 0 < cfg.max_molecules < len(mols):
        pick = np.random.Generator(np.random.PCG64(cfg.split_seed)).permutation(len(mols))
        mols = [mols[i] for i in sorted(pick[:cfg.max_molecules])]
        report.steps.append((f"max_molecules={cfg.max_molecules}", len(mols)))
    kept, failed = [], 0
    iterator: Any = enumerate(mols)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, total=len(mols), desc="chefnmr: conformers + spectra",
                        mininterval=1.0)
    for i, mol in iterator:
        molh = embed_conformers(mol, cfg.n_conformers, cfg.split_seed * CONFORMER_SEED_STRIDE + i)
        if molh is None:
            failed += 1
            continue
        shifts = carbon_shifts(molh)
        h = h_spectrum(molh, cfg.h_points, tuple(cfg.h_range), cfg.field_mhz, cfg.line_width_hz,
                       cfg.j_vicinal_hz, cfg.j_aromatic_hz)
        c = (c80_vector(shifts) if cfg.c_format == "c80"
             else c_grid(shifts, cfg.c_points, cfg.field_mhz, cfg.line_width_hz))
        kept.append((molh, canonical_smiles(mol), h, c))
    report.steps.append(("embedded", len(kept)))
    if not kept:
        raise ConfigError(f"no molecule could be embedded in 3-D; left at each step: "
                          f"{report.text()}", key="task.elements")
    n, k = len(kept), cfg.n_conformers
    width = max(m.GetNumAtoms() for m, *_ in kept)
    coords = np.zeros((n, k, width, 3), dtype=np.float32)
    types = np.full((n, width), -1, dtype=np.int8)
    n_atoms = np.zeros(n, dtype=np.int16)
    for i, (molh, *_rest) in enumerate(kept):
        a = molh.GetNumAtoms()
        n_atoms[i] = a
        types[i, :a] = [ATOM_TYPES.index(atom.GetSymbol()) for atom in molh.GetAtoms()]
        for j, conf in enumerate(molh.GetConformers()):
            coords[i, j, :a] = conf.GetPositions()
    h_all = np.stack([h for *_x, h, _c in kept])
    c_all = np.stack([c for *_x, c in kept])
    dup = duplicate_spectrum_rate(h_all, c_all)
    seconds = time.perf_counter() - start
    log.info("chefnmr data: %s; %d embedding failures; duplicate-spectrum rate %.4f; %.1f s",
             report.text(), failed, dup, seconds)
    return {
        "coords": torch.from_numpy(coords), "atom_types": torch.from_numpy(types),
        "n_atoms": torch.from_numpy(n_atoms), "h_spectrum": torch.from_numpy(h_all),
        "c_spectrum": torch.from_numpy(c_all),
        "smiles": encode_strings([s for _m, s, *_r in kept]),
        "split": torch.from_numpy(split_indices(n, cfg.split_seed)),
        "n_filtered": torch.tensor(len(mols)), "n_embed_failed": torch.tensor(failed),
        "duplicate_spectrum_rate": torch.tensor(dup, dtype=torch.float64),
        "build_seconds": torch.tensor(seconds, dtype=torch.float64),
        "filter_report": encode_strings([report.text()]),
    }


class Batches(Dataset):
    """A fixed list of ready batches (served with batch_size=None)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


class ChefNMRData(TensorDataModule):
    """The cached molecules and spectra; `rows(split)` gives the draw's rows of a split
    (train = 0, val = 1, test = 2; with `overfit_n` > 0 every split is the first overfit_n
    train rows)."""

    def generating_config(self) -> dict[str, Any]:
        c = self.cfg
        return {"elements": sorted(c.elements), "max_heavy_atoms": c.max_heavy_atoms,
                "max_molecules": c.max_molecules, "n_conformers": c.n_conformers,
                "split_seed": c.split_seed, "shift_predictor": str(c.shift_predictor),
                "h_points": c.h_points, "h_range": list(c.h_range), "field_mhz": c.field_mhz,
                "line_width_hz": c.line_width_hz, "j_vicinal_hz": c.j_vicinal_hz,
                "j_aromatic_hz": c.j_aromatic_hz, "c_format": str(c.c_format),
                "c_points": c.c_points if c.c_format == "grid" else None}

    def cache_key(self, part: str = "draw", config: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
        """Return the base key with the seed replaced by `split_seed` (the draw does not depend
        on the training seed)."""
        key = super().cache_key(part, config)
        key["seed"] = int(self.cfg.split_seed)
        return key

    def build(self) -> dict[str, torch.Tensor]:
        return build_dataset(self.cfg)

    def on_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        log.info("chefnmr data: %d molecules, duplicate-spectrum rate %.4f, %d embedding "
                 "failures", tensors["split"].numel(), float(tensors["duplicate_spectrum_rate"]),
                 int(tensors["n_embed_failed"]))

    def rows(self, split: int) -> torch.Tensor:
        """Return the row indices of `split` (0/1/2) in the draw."""
        assert self.tensors is not None, "call setup() first"
        train = torch.nonzero(self.tensors["split"] == 0).flatten()
        if self.cfg.overfit_n > 0:
            return train[:self.cfg.overfit_n]
        return torch.nonzero(self.tensors["split"] == split).flatten()

    def train_batch(self, index: int) -> dict[str, torch.Tensor]:
        """Return train batch `index`: `batch_size` train rows drawn with replacement and one
        conformer each, from a generator seeded by (seed, index) (a pure function of both),
        atoms trimmed to the batch's largest molecule."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        rows = self.rows(0)
        pick = rows[torch.randint(len(rows), (self.cfg.batch_size,), generator=gen)]
        conf = torch.randint(self.cfg.n_conformers, (len(pick),), generator=gen)
        return self.gather(pick, conf)

    def gather(self, rows: torch.Tensor, conf: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the batch of draw rows `rows` (conformers `conf`): coords, atom_types, mask,
        h, c (float32) and index, atoms trimmed to the largest molecule."""
        t = self.tensors
        width = int(t["n_atoms"][rows].max())
        types = t["atom_types"][rows, :width].long()
        return {"coords": t["coords"][rows, conf, :width].float(), "atom_types": types,
                "mask": types >= 0, "h": t["h_spectrum"][rows].float(),
                "c": t["c_spectrum"][rows].float(), "index": rows}

    def train_dataloader(self) -> IndexedBatches:
        """Return the `steps` train batches (a resumed fit continues where it stopped)."""
        return IndexedBatches(self.train_batch, self.cfg.steps, lambda: fit_position(self.trainer))

    def test_dataloader(self) -> DataLoader:
        """Return the evaluation targets (test split, or the overfit rows; the first
        `eval_targets` when > 0) in batches of `eval_batch`, conformer 0."""
        rows = self.rows(2)
        if self.cfg.eval_targets > 0:
            rows = rows[:self.cfg.eval_targets]
        return DataLoader(Batches([self.gather(chunk, torch.zeros(len(chunk), dtype=torch.long))
                                   for chunk in rows.split(self.cfg.eval_batch)]),
                          batch_size=None, shuffle=False, num_workers=0)
