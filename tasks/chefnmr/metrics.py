"""Evaluation metrics over k samples per target (../shared/papers/chefnmr.md, Metrics).

Samples are canonical SMILES without stereo (None = invalid: bond inference failed or timed
out). With S_i the first k samples of target i and t_i its SMILES:
- top-k match = mean_i 1[t_i ∈ S_i] (no re-ranking: the first k in sampling order);
- max Tanimoto = mean_i max_{s ∈ S_i valid} T(fp(s), fp(t_i)), Morgan r = 2, 2048 bits, 0 when
  no sample of i is valid;
- validity = valid samples / all samples;
- AMR = mean over samples of min over reference conformers of the Kabsch-aligned RMSD, with the
  atom correspondence fixed (atom types and order are inputs), all atoms or heavy atoms only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def topk_match(samples: Sequence[Sequence[str | None]], targets: Sequence[str], k: int) -> float:
    """Return the fraction of targets whose SMILES is among their first `k` samples."""
    hits = [t in [s for s in sample[:k] if s is not None] for sample, t in zip(samples, targets)]
    return float(np.mean(hits)) if hits else float("nan")


def validity(samples: Sequence[Sequence[str | None]]) -> float:
    """Return the fraction of all samples that are valid (not None)."""
    flat = [s for sample in samples for s in sample]
    return float(np.mean([s is not None for s in flat])) if flat else float("nan")


def _fingerprint(smiles: str):  # noqa: ANN202 (an RDKit ExplicitBitVect)
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdFingerprintGenerator

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return gen.GetFingerprint(mol)


def tanimoto(a: str, b: str) -> float:
    """Return the Tanimoto similarity |A∩B|/|A∪B| of the Morgan (r = 2, 2048-bit) fingerprints
    of SMILES a and b (0 when either does not parse)."""
    from rdkit import DataStructs

    fa, fb = _fingerprint(a), _fingerprint(b)
    if fa is None or fb is None:
        return 0.0
    return float(DataStructs.TanimotoSimilarity(fa, fb))


def max_tanimoto(samples: Sequence[Sequence[str | None]], targets: Sequence[str], k: int
                 ) -> float:
    """Return mean over targets of the largest Tanimoto similarity among the first `k` valid
    samples (0 for a target without a valid sample)."""
    best = []
    for sample, t in zip(samples, targets):
        sims = [tanimoto(s, t) for s in sample[:k] if s is not None]
        best.append(max(sims) if sims else 0.0)
    return float(np.mean(best)) if best else float("nan")


def kabsch_rmsd(pred: np.ndarray, ref: np.ndarray) -> float:
    """Return min over rotations R and translations of sqrt(mean_a |R(p_a − p̄) − (r_a − r̄)|²)
    for point sets (n, 3) with fixed correspondence (Kabsch, reflections excluded)."""
    p = pred - pred.mean(axis=0)
    r = ref - ref.mean(axis=0)
    u, _s, vt = np.linalg.svd(p.T @ r)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(np.mean(np.sum((p @ rot - r) ** 2, axis=1))))


def amr(samples: Sequence[np.ndarray], references: np.ndarray, atom_mask: np.ndarray) -> float:
    """Return the mean over `samples` (each (n, 3)) of the minimum Kabsch RMSD to any of the
    reference conformers `references` (K, n, 3), over the atoms where `atom_mask` is true."""
    m = np.asarray(atom_mask, dtype=bool)
    vals = [min(kabsch_rmsd(np.asarray(s)[m], ref[m]) for ref in references) for s in samples]
    return float(np.mean(vals)) if vals else float("nan")


def bond_laplacian(smiles: str) -> np.ndarray | None:
    """Return the graph Laplacian L = D − A (float64) of the heavy-atom bond graph of `smiles`
    (unweighted; its spectrum is the callbacks' job), or None when it does not parse."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    adj = Chem.GetAdjacencyMatrix(mol).astype(np.float64)
    return np.diag(adj.sum(axis=1)) - adj
