"""Our forward model of 1D ¹H and ¹³C NMR spectra (rule-based; ../shared/papers/chefnmr.md).

Shifts: a deterministic rule table (`C_RULES`, `H_RULES`, about 40 entries each) on element,
hybridisation, aromaticity, #H and neighbour elements: a base shift plus α/β(/γ) increments
(Grant–Paul style for sp³ ¹³C, δ = −2.3 + Σα + Σβ + Σγ; Shoolery style for sp³ ¹H,
δ = base(#H) + Σ α increments + 0.25·#β single-bonded heteroatoms). Values are textbook increments rounded
(Pretsch-style tables); they are a simulator of our own, not a predictor of real spectra.

¹H: one multiplet per class of equivalent H (`CanonicalRankAtoms(breakTies=False)`), first-order
n+1 splitting by every vicinal H (H–X–Y–H) of another class (J = `j_aromatic_hz` between ortho
aromatic H, `j_vicinal_hz` otherwise; H on O, N, S exchange: singlets that split nothing),
intensity ∝ the class size, Lorentzian lines of full width `line_width_hz` at `field_mhz`,
integrated exactly over each grid bin (the grid spacing is wider than a line). Shifts outside the
grid are clipped into it. ¹³C: 80 equal bins over [3.42, 231.3] ppm ("C80", 1 = a carbon
resonates there; shifts outside fall into the end bins) or a Lorentzian grid like ¹H.
"""

from __future__ import annotations

import math

import numpy as np
from rdkit import Chem

C80_RANGE = (3.42, 231.3)
C80_BINS = 80
C_GRID_RANGE = (-20.0, 230.0)
HALOGENS = ("F", "Cl", "Br", "I")

# ---- 13C increments -------------------------------------------------------------------------
C_SP3_BASE = -2.3
C_ALPHA = {"C": 9.1, "N": 28.3, "O": 49.0, "F": 70.1, "Cl": 31.0, "Br": 18.9, "I": -7.2,
           "S": 10.6, "P": 9.0}
# an α carbon of a group (C=O, aromatic, C=C, C=N, C≡N, C≡C) gives one increment for the whole
# group (replacing 9.1): the group's own atoms add no β/γ terms
C_ALPHA_GROUP = {"C_ketone": 31.0, "C_carbonyl": 23.0, "C_aromatic": 23.7, "C_alkene": 21.7,
                 "C_imine": 21.7, "C_nitrile": 4.1, "C_triple": 6.0}
C_BETA = {"C": 9.4, "N": 11.3, "O": 10.1, "F": 7.8, "Cl": 10.0, "Br": 11.0, "I": 10.9, "S": 11.4,
          "P": 7.0}
C_GAMMA_C, C_GAMMA_HETERO = -2.5, -2.5  # γ through single bonds only
C_AROMATIC_BASE = 128.5
C_AROMATIC_RING_HETERO = {"N6": 150.0, "N5": 130.0, "O": 143.0, "S": 125.0}
C_AROMATIC_EXTRA_HETERO = 8.0   # each further ring heteroatom neighbour
C_IPSO = {"O": 26.9, "N": 18.2, "N_nitro": 19.9, "C_sp3": 9.3, "C_carbonyl": 5.0,
          "C_aromatic": 13.0, "C_nitrile": -15.7, "C_other": 9.3, "F": 34.8, "Cl": 6.2,
          "Br": -5.5, "I": -34.1, "S": 10.2, "P": 5.0, "=O": 33.5}
C_CARBONYL = {"carbonate_urea": 155.0, "acid_ester": 172.0, "amide": 170.0, "acyl_halide": 170.0,
              "aldehyde": 200.0, "ketone": 207.0, "ketone_conjugated": 198.0}
C_THIONE, C_THIOUREA = 200.0, 182.0
C_IMINE = {"amidine": 157.0, "oxime": 155.0, "imine": 165.0}
C_NITRILE, C_ALKYNE_BASE, C_ALKYNE_SUB, C_CUMULENE = 118.0, 68.0, 10.0, 130.0
C_ALKENE_BASE = 123.3
C_ALKENE_ALPHA = {"C": 10.6, "O": 29.0, "N": 16.0, "F": 24.9, "Cl": 2.8, "Br": -8.6, "I": -38.0,
                  "S": 9.0, "P": 5.0}
C_ALKENE_BETA = {"C": -7.9, "C_carbonyl": 6.0, "O": -39.0, "N": -25.0, "F": -34.3, "Cl": -6.1,
                 "Br": -1.0, "I": 7.0, "S": -10.0, "P": 0.0}

# ---- 1H shifts --------------------------------------------------------------------------------
H_SP3_BASE = {4: 0.23, 3: 0.90, 2: 1.30, 1: 1.55}
H_SP3_ALPHA = {"O": 2.40, "O_acyl": 2.80, "O_aryl": 2.80, "N": 1.50, "N_amide": 1.90,
               "N_aromatic": 2.70, "N_nitro": 3.40, "C_carbonyl": 1.20, "C_aromatic": 1.40,
               "C_alkene": 0.80, "C_triple": 1.10, "C_nitrile": 1.10, "C_sp3": 0.0, "C_imine": 1.00, "F": 3.35,
               "Cl": 2.15, "Br": 1.80, "I": 1.30, "S": 1.20, "P": 0.80}
H_SP3_BETA_HETERO = 0.25
H_SP3_MAX = 6.0
H_AROMATIC = {"base": 7.26, "ring_N": 8.50, "ring_O": 7.40, "ring_S": 7.20, "five_ring": 6.30}
H_ORTHO = {"O": -0.45, "N": -0.70, "N_nitro": 0.95, "C_carbonyl": 0.60, "F": -0.30, "Cl": 0.0,
           "Br": 0.20, "I": 0.40, "C_sp3": -0.20, "S": -0.10}
H_ALDEHYDE, H_FORMYL, H_IMINE, H_ALKYNE = 9.70, 8.10, 7.80, 2.10
H_ALKENE_BASE = 5.25
H_ALKENE_GEM = {"O": 1.20, "N": 0.80, "C_carbonyl": 1.10, "C_aromatic": 1.40, "C_sp3": 0.45,
                "C_other": 0.45, "Cl": 1.00, "Br": 1.10, "F": 1.50, "S": 1.0}
H_ALKENE_VIC = {"O": -1.10, "N": -1.20, "C_carbonyl": 0.90, "C_aromatic": 0.10, "C_sp3": -0.25,
                "C_other": -0.25, "Cl": 0.10, "Br": 0.30, "F": -0.50, "S": -0.3}
H_OH = {"acid": 11.0, "phenol": 5.5, "oxime": 9.0, "alcohol": 2.2}
H_NH = {"amide": 6.5, "aromatic_ring": 8.0, "aniline": 3.6, "amine": 1.4}
H_SH, H_PH = 1.6, 4.0


def _heavy(atom: Chem.Atom, exclude: Chem.Atom | None = None) -> list[Chem.Atom]:
    """Return the heavy-atom neighbours of `atom` other than `exclude`."""
    skip = -1 if exclude is None else exclude.GetIdx()
    return [n for n in atom.GetNeighbors() if n.GetAtomicNum() > 1 and n.GetIdx() != skip]


def _bond_order(a: Chem.Atom, b: Chem.Atom) -> float:
    return a.GetOwningMol().GetBondBetweenAtoms(a.GetIdx(), b.GetIdx()).GetBondTypeAsDouble()


def _double_partner(atom: Chem.Atom, symbol: str | None = None) -> Chem.Atom | None:
    """Return the atom joined to `atom` by a non-aromatic double bond (of element `symbol`)."""
    for bond in atom.GetBonds():
        if bond.GetBondType() == Chem.BondType.DOUBLE:
            other = bond.GetOtherAtom(atom)
            if symbol is None or other.GetSymbol() == symbol:
                return other
    return None


def _is_carbonyl(atom: Chem.Atom) -> bool:
    return atom.GetSymbol() == "C" and _double_partner(atom, "O") is not None


def _is_nitro(atom: Chem.Atom) -> bool:
    return atom.GetSymbol() == "N" and sum(n.GetSymbol() == "O" for n in atom.GetNeighbors()) >= 2


def _has_triple(atom: Chem.Atom) -> bool:
    return any(b.GetBondType() == Chem.BondType.TRIPLE for b in atom.GetBonds())


def _carbon_kind(atom: Chem.Atom) -> str:
    """Return the class of a carbon substituent: C_carbonyl, C_aromatic, C_nitrile, C_triple,
    C_alkene, C_imine or C_sp3."""
    if atom.GetIsAromatic():
        return "C_aromatic"
    if _is_carbonyl(atom):
        return "C_carbonyl"
    if _has_triple(atom):
        return "C_nitrile" if any(n.GetSymbol() == "N" and _bond_order(atom, n) == 3
                                  for n in atom.GetNeighbors()) else "C_triple"
    if _double_partner(atom, "C") is not None:
        return "C_alkene"
    if _double_partner(atom, "N") is not None:
        return "C_imine"
    return "C_sp3"


def C_CARBONYL_KIND(atom: Chem.Atom) -> str:  # noqa: N802 (reads as the table it indexes)
    """Return the `C_CARBONYL` class of a C=O carbon: carbonate_urea (≥ 2 single-bonded O/N),
    acid_ester, amide, acyl_halide, aldehyde (has H), ketone_conjugated (aryl/vinyl) or ketone."""
    oxygen = _double_partner(atom, "O")
    single = [n for n in _heavy(atom) if n.GetIdx() != oxygen.GetIdx()]
    n_o = sum(n.GetSymbol() == "O" for n in single)
    n_n = sum(n.GetSymbol() == "N" for n in single)
    if n_o + n_n >= 2:
        return "carbonate_urea"
    if n_o == 1:
        return "acid_ester"
    if n_n == 1:
        return "amide"
    if any(n.GetSymbol() in HALOGENS for n in single):
        return "acyl_halide"
    if atom.GetTotalNumHs(includeNeighbors=True) > 0:
        return "aldehyde"
    if any(_carbon_kind(n) in ("C_aromatic", "C_alkene") for n in single):
        return "ketone_conjugated"
    return "ketone"


def carbon_shift(atom: Chem.Atom) -> float:
    """Return the rule-based ¹³C shift (ppm) of carbon `atom` (in a sanitized molecule)."""
    sym = atom.GetSymbol
    assert sym() == "C", sym()
    nbrs = _heavy(atom)
    if atom.GetIsAromatic():
        ring = atom.GetOwningMol().GetRingInfo()
        hetero = [n for n in nbrs if n.GetIsAromatic() and n.GetSymbol() != "C"
                  and ring.NumBondRings(atom.GetOwningMol().GetBondBetweenAtoms(
                      atom.GetIdx(), n.GetIdx()).GetIdx()) > 0]
        if hetero:
            first = hetero[0].GetSymbol()
            if first == "N":
                first = "N6" if ring.IsAtomInRingOfSize(atom.GetIdx(), 6) else "N5"
            shift = C_AROMATIC_RING_HETERO.get(first, C_AROMATIC_BASE)
            shift += C_AROMATIC_EXTRA_HETERO * (len(hetero) - 1)
        else:
            shift = C_AROMATIC_BASE
        for n in nbrs:
            bond = atom.GetOwningMol().GetBondBetweenAtoms(atom.GetIdx(), n.GetIdx())
            if bond.GetIsAromatic():
                continue
            if bond.GetBondType() == Chem.BondType.DOUBLE and n.GetSymbol() == "O":
                shift += C_IPSO["=O"]
            elif n.GetSymbol() == "C":
                kind = _carbon_kind(n)
                shift += C_IPSO.get(kind, C_IPSO["C_other"])
            elif _is_nitro(n):
                shift += C_IPSO["N_nitro"]
            else:
                shift += C_IPSO.get(n.GetSymbol(), 0.0)
        return shift
    if atom.GetHybridization() == Chem.HybridizationType.SP:
        if any(n.GetSymbol() == "N" and _bond_order(atom, n) == 3 for n in nbrs):
            return C_NITRILE
        if _has_triple(atom):
            return C_ALKYNE_BASE + C_ALKYNE_SUB * (len(nbrs) - 1)
        return C_CUMULENE
    if _double_partner(atom, "O") is not None:
        return C_CARBONYL[C_CARBONYL_KIND(atom)]
    sulfur = _double_partner(atom, "S")
    if sulfur is not None:
        return C_THIOUREA if any(n.GetSymbol() == "N" for n in nbrs) else C_THIONE
    nitrogen = _double_partner(atom, "N")
    if nitrogen is not None:
        others = [n for n in nbrs if n.GetIdx() != nitrogen.GetIdx()]
        if any(n.GetSymbol() in ("N", "O") for n in others):
            return C_IMINE["amidine"]
        if any(n.GetSymbol() == "O" for n in _heavy(nitrogen, atom)):
            return C_IMINE["oxime"]
        return C_IMINE["imine"]
    partner = _double_partner(atom, "C")
    if partner is not None:
        shift = C_ALKENE_BASE
        for n in _heavy(atom, partner):
            shift += C_ALKENE_ALPHA.get(n.GetSymbol(), 0.0)
        for n in _heavy(partner, atom):
            key = "C_carbonyl" if _is_carbonyl(n) else n.GetSymbol()
            shift += C_ALKENE_BETA.get(key, 0.0)
        return float(np.clip(shift, 80.0, 170.0))
    # sp3 (Grant-Paul style)
    shift = C_SP3_BASE
    for a in nbrs:
        kind = _carbon_kind(a) if a.GetSymbol() == "C" else "hetero"
        if kind not in ("C_sp3", "hetero"):
            if kind == "C_carbonyl" and C_CARBONYL_KIND(a) in ("ketone", "aldehyde"):
                kind = "C_ketone"
            shift += C_ALPHA_GROUP[kind]
            continue
        shift += C_ALPHA["C"] if kind == "C_sp3" else C_ALPHA.get(a.GetSymbol(), 0.0)
        for b in _heavy(a, atom):
            shift += C_BETA.get(b.GetSymbol(), 0.0)
            for c in _heavy(b, a):
                if c.GetIdx() != atom.GetIdx() and _bond_order(b, c) == 1.0:
                    shift += C_GAMMA_C if c.GetSymbol() == "C" else C_GAMMA_HETERO
    return float(np.clip(shift, -5.0, 110.0))


def _substituent_key(n: Chem.Atom) -> str:
    """Return the key of a substituent atom for the ¹H increment tables."""
    if n.GetSymbol() == "C":
        return _carbon_kind(n)
    if _is_nitro(n):
        return "N_nitro"
    return n.GetSymbol()


def hydrogen_shift(h: Chem.Atom) -> float:
    """Return the rule-based ¹H shift (ppm) of hydrogen atom `h` (explicit H in the molecule)."""
    parent = h.GetNeighbors()[0]
    psym = parent.GetSymbol()
    nbrs = _heavy(parent)
    if psym == "O":
        if any(_is_carbonyl(n) for n in nbrs):
            return H_OH["acid"]
        if any(n.GetIsAromatic() for n in nbrs):
            return H_OH["phenol"]
        if any(n.GetSymbol() == "N" for n in nbrs):
            return H_OH["oxime"]
        return H_OH["alcohol"]
    if psym == "N":
        if any(_is_carbonyl(n) for n in nbrs):
            return H_NH["amide"]
        if parent.GetIsAromatic():
            return H_NH["aromatic_ring"]
        if any(n.GetIsAromatic() for n in nbrs):
            return H_NH["aniline"]
        return H_NH["amine"]
    if psym == "S":
        return H_SH
    if psym != "C":
        return H_PH
    if parent.GetIsAromatic():
        mol = parent.GetOwningMol()
        ring = mol.GetRingInfo()
        ring_nbrs = [n for n in nbrs if mol.GetBondBetweenAtoms(
            parent.GetIdx(), n.GetIdx()).GetIsAromatic()]
        hetero = [n.GetSymbol() for n in ring_nbrs if n.GetSymbol() != "C"]
        if hetero:
            shift = H_AROMATIC.get(f"ring_{hetero[0]}", H_AROMATIC["base"])
        elif not ring.IsAtomInRingOfSize(parent.GetIdx(), 6):
            shift = H_AROMATIC["five_ring"]
        else:
            shift = H_AROMATIC["base"]
        for r in ring_nbrs:
            for x in _heavy(r, parent):
                if not mol.GetBondBetweenAtoms(r.GetIdx(), x.GetIdx()).GetIsAromatic():
                    shift += H_ORTHO.get(_substituent_key(x), 0.0)
        return shift
    if parent.GetHybridization() == Chem.HybridizationType.SP:
        return H_ALKYNE
    oxygen = _double_partner(parent, "O")
    if oxygen is not None:
        return H_FORMYL if any(n.GetSymbol() in ("O", "N") and n.GetIdx() != oxygen.GetIdx()
                               for n in nbrs) else H_ALDEHYDE
    if _double_partner(parent, "N") is not None:
        return H_IMINE
    partner = _double_partner(parent, "C")
    if partner is not None:
        shift = H_ALKENE_BASE
        for n in _heavy(parent, partner):
            shift += H_ALKENE_GEM.get(_substituent_key(n), 0.0)
        for n in _heavy(partner, parent):
            shift += H_ALKENE_VIC.get(_substituent_key(n), 0.0)
        return shift
    shift = H_SP3_BASE[min(max(parent.GetTotalNumHs(includeNeighbors=True), 1), 4)]
    for n in nbrs:
        key = _substituent_key(n)
        if n.GetSymbol() == "O":
            others = _heavy(n, parent)
            if any(_is_carbonyl(o) for o in others):
                key = "O_acyl"
            elif any(o.GetIsAromatic() for o in others):
                key = "O_aryl"
        elif n.GetSymbol() == "N" and key == "N":
            if n.GetIsAromatic():
                key = "N_aromatic"
            elif any(_is_carbonyl(o) for o in _heavy(n, parent)):
                key = "N_amide"
        shift += H_SP3_ALPHA.get(key, 0.0)
        shift += H_SP3_BETA_HETERO * sum(b.GetSymbol() != "C" and _bond_order(n, b) == 1.0
                                         for b in _heavy(n, parent))
    return min(shift, H_SP3_MAX)


def _exchangeable(h: Chem.Atom) -> bool:
    return h.GetNeighbors()[0].GetSymbol() in ("O", "N", "S")


def h_multiplets(molh: Chem.Mol, j_vicinal_hz: float, j_aromatic_hz: float
                 ) -> list[tuple[float, int, list[float]]]:
    """Return one (shift ppm, class size, couplings Hz) per class of equivalent H of `molh`
    (explicit H), sorted by shift: the couplings list one J per vicinal H of another class
    (n+1 rule; exchangeable H couple to nothing)."""
    ranks = list(Chem.CanonicalRankAtoms(molh, breakTies=False))
    classes: dict[int, list[Chem.Atom]] = {}
    for atom in molh.GetAtoms():
        if atom.GetAtomicNum() == 1:
            classes.setdefault(ranks[atom.GetIdx()], []).append(atom)
    out = []
    for rank, members in classes.items():
        h = members[0]
        parent = h.GetNeighbors()[0]
        couplings: list[float] = []
        if not _exchangeable(h):
            for q in _heavy(parent):
                bond = molh.GetBondBetweenAtoms(parent.GetIdx(), q.GetIdx())
                j = j_aromatic_hz if bond.GetIsAromatic() else j_vicinal_hz
                for hq in q.GetNeighbors():
                    if (hq.GetAtomicNum() == 1 and ranks[hq.GetIdx()] != rank
                            and not _exchangeable(hq)):
                        couplings.append(j)
        out.append((hydrogen_shift(h), len(members), couplings))
    return sorted(out, key=lambda t: (t[0], t[1], len(t[2])))


def multiplet_lines(center_ppm: float, couplings_hz: list[float], field_mhz: float
                    ) -> list[tuple[float, float]]:
    """Return the first-order lines (ppm, relative intensity summing to 1) of one H split by
    each coupling in turn: n equal couplings give n+1 lines with binomial intensities C(n,k)/2^n
    at spacings J/field_mhz ppm."""
    lines = {0.0: 1.0}
    for j in couplings_hz:
        half = 0.5 * j / field_mhz
        nxt: dict[float, float] = {}
        for off, w in lines.items():
            for new in (round(off - half, 12), round(off + half, 12)):
                nxt[new] = nxt.get(new, 0.0) + 0.5 * w
        lines = nxt
    return sorted((center_ppm + off, w) for off, w in lines.items())


def lorentzian(x: np.ndarray, x0: float, hwhm: float) -> np.ndarray:
    """Return the unit-area Lorentzian density L(x) = (1/π)·γ/((x − x0)² + γ²), γ = hwhm;
    peak height 1/(πγ), half of it at x0 ± γ."""
    return (hwhm / math.pi) / ((x - x0) ** 2 + hwhm**2)


def grid_edges(low: float, high: float, points: int) -> np.ndarray:
    """Return the points + 1 bin edges around the grid linspace(low, high, points): midpoints
    between grid points, and half a spacing beyond each end."""
    grid = np.linspace(low, high, points)
    step = grid[1] - grid[0]
    return np.concatenate([[grid[0] - step / 2], (grid[:-1] + grid[1:]) / 2, [grid[-1] + step / 2]])


def binned_lorentzians(edges: np.ndarray, centers: np.ndarray, weights: np.ndarray,
                       hwhm: float) -> np.ndarray:
    """Return, per bin, Σ_k w_k ∫_bin L(x; c_k, γ) dx = Σ_k w_k/π·[atan((e_{i+1} − c_k)/γ)
    − atan((e_i − c_k)/γ)] (exact areas, so a line narrower than a bin keeps its weight)."""
    cdf = np.arctan((edges[None, :] - centers[:, None]) / hwhm) / math.pi
    return (weights[:, None] * np.diff(cdf, axis=1)).sum(axis=0)


def h_spectrum(molh: Chem.Mol, points: int, ppm_range: tuple[float, float], field_mhz: float,
               line_width_hz: float, j_vicinal_hz: float, j_aromatic_hz: float) -> np.ndarray:
    """Return the ¹H spectrum of `molh` (explicit H) on linspace(low, high, points): per bin the
    Lorentzian area of every line, weighted by its class size (the total is ≈ the number of H).
    Line centres are clipped into the grid."""
    low, high = ppm_range
    centers, weights = [], []
    for shift, size, couplings in h_multiplets(molh, j_vicinal_hz, j_aromatic_hz):
        shift = float(np.clip(shift, low, high))
        for ppm, w in multiplet_lines(shift, couplings, field_mhz):
            centers.append(ppm)
            weights.append(size * w)
    if not centers:
        return np.zeros(points, dtype=np.float32)
    hwhm = 0.5 * line_width_hz / field_mhz
    out = binned_lorentzians(grid_edges(low, high, points), np.asarray(centers),
                             np.asarray(weights), hwhm)
    return out.astype(np.float32)


def carbon_shifts(mol: Chem.Mol) -> list[float]:
    """Return the ¹³C shift (ppm) of every carbon of `mol`, in atom order."""
    return [carbon_shift(a) for a in mol.GetAtoms() if a.GetSymbol() == "C"]


def c80_bin(shift: float) -> int:
    """Return the C80 bin of a shift: floor((δ − 3.42)/w), w = (231.3 − 3.42)/80, clipped to
    [0, 79]."""
    low, high = C80_RANGE
    width = (high - low) / C80_BINS
    return int(min(max(math.floor((shift - low) / width), 0), C80_BINS - 1))


def c80_vector(shifts: list[float]) -> np.ndarray:
    """Return the 80 binary C80 bins (uint8) that the shifts fall into."""
    out = np.zeros(C80_BINS, dtype=np.uint8)
    for s in shifts:
        out[c80_bin(s)] = 1
    return out


def c_grid(shifts: list[float], points: int, field_mhz: float, line_width_hz: float
           ) -> np.ndarray:
    """Return the ¹³C spectrum as Lorentzian areas on linspace(−20, 230, points) (one unit line
    per carbon; ¹³C frequency = field_mhz/4)."""
    low, high = C_GRID_RANGE
    if not shifts:
        return np.zeros(points, dtype=np.float32)
    hwhm = 0.5 * line_width_hz / (field_mhz / 4.0)
    centers = np.clip(np.asarray(shifts), low, high)
    return binned_lorentzians(grid_edges(low, high, points), centers, np.ones(len(shifts)),
                              hwhm).astype(np.float32)
