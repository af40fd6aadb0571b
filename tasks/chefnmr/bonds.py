"""Bonds from coordinates: XYZ -> RDKit `rdDetermineBonds.DetermineBonds` (charge 0) ->
canonical SMILES without stereo, in a worker process with a timeout.

`DetermineBonds` can hang (bond-order search on odd geometries) or raise; `BondWorker` runs it in
one long-lived child process and waits `timeout_s` for each answer: a timeout kills the child
(a fresh one is started for the next call) and, like an exception, gives None (invalid), so a
bad sample never stalls the run.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def xyz_block(symbols: Sequence[str], coords: np.ndarray) -> str:
    """Return the XYZ file text of atoms `symbols` at `coords` (n, 3) in Å."""
    lines = [str(len(symbols)), ""]
    lines += [f"{s} {x:.6f} {y:.6f} {z:.6f}" for s, (x, y, z) in zip(symbols, coords)]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class BondResult:
    """SMILES of one structure: `smiles` of the whole molecule (fragments joined by '.') and
    `largest` of its largest fragment (by heavy atoms); both canonical, without stereo."""

    smiles: str
    largest: str


def smiles_from_xyz(block: str, charge: int = 0) -> BondResult | None:
    """Return the canonical SMILES (no stereo, H removed) of the molecule whose bonds
    `DetermineBonds(charge=charge)` infers from the XYZ `block`, or None when RDKit cannot parse,
    assign bond orders or sanitize it. Runs in the calling process (use `BondWorker` for the
    timeout)."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdDetermineBonds

    with rdBase.BlockLogs():
        mol = Chem.MolFromXYZBlock(block)
        if mol is None:
            return None
        try:
            rdDetermineBonds.DetermineBonds(mol, charge=int(charge), embedChiral=False)
            Chem.SanitizeMol(mol)
            heavy = Chem.RemoveHs(mol)
        except Exception:  # RDKit raises several types (ValueError, RuntimeError, ...)
            return None
        smiles = Chem.MolToSmiles(heavy, isomericSmiles=False)
        frags = Chem.GetMolFrags(heavy, asMols=True, sanitizeFrags=False)
        big = max(frags, key=lambda f: f.GetNumHeavyAtoms())
        return BondResult(smiles, Chem.MolToSmiles(big, isomericSmiles=False))


def _serve(conn: Any, target: Callable[[str], Any]) -> None:
    """Child loop: answer each block received on `conn` with ('ok', target(block)) or
    ('error', message); stop on None."""
    while True:
        block = conn.recv()
        if block is None:
            return
        try:
            conn.send(("ok", target(block)))
        except Exception as err:  # any failure of the target is an invalid sample
            conn.send(("error", repr(err)))


class BondWorker:
    """A child process that applies `target` (default `smiles_from_xyz`) to XYZ blocks, with a
    timeout per call. Counts `calls`, `timeouts` and `errors`. Use as a context manager, or call
    `close()`. The child is forked (it inherits `target`, which need not be picklable)."""

    def __init__(self, timeout_s: float = 2.0,
                 target: Callable[[str], Any] = smiles_from_xyz, context: str = "fork") -> None:
        self.timeout_s, self.target = float(timeout_s), target
        self.ctx = mp.get_context(context)
        self.proc: Any = None
        self.conn: Any = None
        self.calls = self.timeouts = self.errors = 0

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_serve, args=(child, self.target), daemon=True)
        self.proc.start()
        child.close()

    def _kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.join(timeout=5)
            self.conn.close()
        self.proc = self.conn = None

    def __call__(self, block: str) -> Any:
        """Return target(block), or None when it raised or took longer than `timeout_s`."""
        self.calls += 1
        if self.proc is None or not self.proc.is_alive():
            self._kill()
            self._start()
        self.conn.send(block)
        if not self.conn.poll(self.timeout_s):
            self.timeouts += 1
            self._kill()
            return None
        try:
            status, value = self.conn.recv()
        except EOFError:  # the child died (e.g. a crash inside RDKit)
            self.errors += 1
            self._kill()
            return None
        if status != "ok":
            self.errors += 1
            return None
        return value

    def map(self, blocks: Iterable[str]) -> list[Any]:
        """Return [self(b) for b in blocks]."""
        return [self(b) for b in blocks]

    def close(self) -> None:
        """Stop the child process."""
        if self.proc is not None and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=1)
            except (BrokenPipeError, OSError):
                pass
        self._kill()

    def __enter__(self) -> BondWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
