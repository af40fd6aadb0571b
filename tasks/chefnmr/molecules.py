"""Molecules of the task: RDKit's bundled NCI set, filtered, embedded in 3-D, split.

`load_nci()` reads `<RDDataDir>/NCI/first_5K.smi`; `filter_molecules()` keeps neutral,
single-fragment molecules made of the allowed elements with at most `max_heavy_atoms` heavy
atoms and reports how many survive each step; `embed_conformers()` adds explicit H and draws
conformers by ETKDG (v3) followed by MMFF94 (kept as ETKDG geometry where MMFF has no
parameters); `split_indices()` is the seeded 80/10/10 split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from rdkit import Chem, RDConfig, rdBase
from rdkit.Chem import AllChem

from runner.validation import ConfigError

NCI_FILE = os.path.join(RDConfig.RDDataDir, "NCI", "first_5K.smi")


def canonical_smiles(mol: Chem.Mol) -> str:
    """Return the canonical SMILES of `mol` without stereo and without explicit H."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol), isomericSmiles=False)


def load_nci(path: str = NCI_FILE) -> list[str]:
    """Return the SMILES strings of the NCI file, in file order (first column of each line)."""
    with open(path) as handle:
        return [line.split()[0] for line in handle if line.strip()]


@dataclass
class FilterReport:
    """How many molecules were left after each filter step, in order."""

    steps: list[tuple[str, int]] = field(default_factory=list)

    def text(self) -> str:
        """Return the counts as `step: n -> ...` text."""
        return " -> ".join(f"{name}: {n}" for name, n in self.steps)


def filter_molecules(smiles: list[str], elements: list[str], max_heavy_atoms: int
                     ) -> tuple[list[Chem.Mol], FilterReport]:
    """Return the molecules of `smiles` that parse, are neutral (net formal charge 0: nitro groups stay), have one
    fragment, only atoms in `elements` (+ H) and at most `max_heavy_atoms` heavy atoms, with
    the count left after each step; raise ConfigError naming the keys when none is left.
    Duplicates (same canonical SMILES without stereo) are kept once, first occurrence."""
    report = FilterReport([("read", len(smiles))])
    with rdBase.BlockLogs():
        mols = [m for m in (Chem.MolFromSmiles(s) for s in smiles) if m is not None]
    report.steps.append(("parsed", len(mols)))
    mols = [m for m in mols if Chem.GetFormalCharge(m) == 0]
    report.steps.append(("neutral", len(mols)))
    mols = [m for m in mols if len(Chem.GetMolFrags(m)) == 1]
    report.steps.append(("single_fragment", len(mols)))
    allowed = set(elements) | {"H"}
    mols = [m for m in mols if all(a.GetSymbol() in allowed for a in m.GetAtoms())]
    report.steps.append((f"elements={sorted(set(elements))}", len(mols)))
    mols = [m for m in mols if m.GetNumHeavyAtoms() <= max_heavy_atoms]
    report.steps.append((f"max_heavy_atoms={max_heavy_atoms}", len(mols)))
    seen: set[str] = set()
    unique = []
    for m in mols:
        key = canonical_smiles(m)
        if key not in seen:
            seen.add(key)
            unique.append(m)
    report.steps.append(("unique", len(unique)))
    if not unique:
        raise ConfigError("no molecule is left after filtering by task.elements and "
                          f"task.max_heavy_atoms; left at each step: {report.text()}",
                          key="task.elements")
    return unique, report


def embed_conformers(mol: Chem.Mol, n_conformers: int, seed: int,
                     mmff: bool = True) -> Chem.Mol | None:
    """Return `mol` with explicit H and `n_conformers` 3-D conformers (ETKDGv3, random seed
    `seed`, then MMFF94 up to 500 iterations each), or None when embedding fails (fewer than
    `n_conformers` conformers)."""
    molh = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    params.numThreads = 1
    with rdBase.BlockLogs():
        ids = list(AllChem.EmbedMultipleConfs(molh, numConfs=int(n_conformers), params=params))
        if len(ids) < n_conformers:
            return None
        if mmff and AllChem.MMFFHasAllMoleculeParams(molh):
            AllChem.MMFFOptimizeMoleculeConfs(molh, numThreads=1, maxIters=500)
    return molh


def split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)
                  ) -> np.ndarray:
    """Return an int8 array of length n: 0 = train, 1 = val, 2 = test, from a permutation
    drawn with numpy's PCG64 at `seed`; sizes floor(0.8 n) train, floor(0.1 n) val, rest test."""
    order = np.random.Generator(np.random.PCG64(int(seed))).permutation(n)
    n_train, n_val = int(fractions[0] * n), int(fractions[1] * n)
    split = np.full(n, 2, dtype=np.int8)
    split[order[:n_train]] = 0
    split[order[n_train:n_train + n_val]] = 1
    return split
