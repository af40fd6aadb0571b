"""Parameters of the chefnmr task (../shared/papers/chefnmr.md).

`Config` is the one source of truth of each parameter; `__post_init__` runs the range checks
(each raises `ConfigError` naming the key and what is allowed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from runner.validation import ConfigError, check_choice, check_positive, check_range
from tasks.base.contract import choices

# atom types of the denoiser's one-hot (the paper's vocabulary; H is always present)
ATOM_TYPES: tuple[str, ...] = ("C", "H", "O", "N", "S", "P", "F", "Cl", "Br", "I")
EVAL_MODES: tuple[str, ...] = ("both", "h_only", "c_only", "none")

ShiftPredictor = choices("ShiftPredictor", "rules csp5", __name__)
CFormat = choices("CFormat", "c80 grid", __name__)
MaskToken = choices("MaskToken", "zeros learned", __name__)


def check_elements(key: str, elements: list[str]) -> None:
    """Raise ConfigError unless every symbol in `elements` is an element RDKit knows and one of
    the denoiser's atom types `ATOM_TYPES` (H is implied and may be omitted)."""
    from rdkit import Chem, rdBase

    if len(elements) == 0:
        raise ConfigError(f"{key} is empty; give heavy-atom symbols from: "
                          f"{', '.join(ATOM_TYPES)}", key=key)
    table = Chem.GetPeriodicTable()
    for symbol in elements:
        try:
            with rdBase.BlockLogs():
                table.GetAtomicNumber(str(symbol))
        except RuntimeError:
            raise ConfigError(f"{key}: {symbol!r} is not an element RDKit knows; allowed: "
                              f"{', '.join(ATOM_TYPES)}", key=key) from None
        check_choice(key, str(symbol), ATOM_TYPES)


@dataclass
class Config:
    # data
    elements: list[str] = field(default_factory=lambda: ["C", "N", "O"])
    max_heavy_atoms: int = 12
    max_molecules: int = 0
    n_conformers: int = 2
    split_seed: int = 0
    shift_predictor: ShiftPredictor = ShiftPredictor.rules
    h_points: int = 1000
    h_range: list[float] = field(default_factory=lambda: [-2.0, 10.0])
    field_mhz: float = 400.0
    line_width_hz: float = 1.5
    j_vicinal_hz: float = 7.0
    j_aromatic_hz: float = 8.0
    c_format: CFormat = CFormat.c80
    c_points: int = 1000
    # model and training
    dit_blocks: int = 4
    hidden: int = 96
    heads: int = 4
    embedder_hidden: int = 64
    embedder_layers: int = 2
    modality_dropout: float = 0.1
    mask_token: MaskToken = MaskToken.learned
    smooth_lddt: bool = True
    lddt_weight: float = 1.0
    lr: float = 1.0e-4
    ema_decay: float = 0.999
    batch_size: int = 32
    steps: int = 300
    # sampling and evaluation
    n_samples: int = 10
    sampling_steps: int = 50
    cfg_weights: list[float] = field(default_factory=lambda: [0.0, 2.0])
    eval_modes: list[str] = field(default_factory=lambda: list(EVAL_MODES))
    bond_timeout_s: float = 2.0
    eval_targets: int = 8
    eval_batch: int = 16
    overfit_n: int = 0

    def __post_init__(self) -> None:
        check_elements("task.elements", list(self.elements))
        check_range("task.max_heavy_atoms", self.max_heavy_atoms, 1, None)
        check_range("task.max_molecules", self.max_molecules, 0, None)
        check_range("task.n_conformers", self.n_conformers, 1, None)
        check_range("task.h_points", self.h_points, 16, None)
        if len(self.h_range) != 2 or not self.h_range[0] < self.h_range[1]:
            raise ConfigError(f"task.h_range={list(self.h_range)!r} must be [low, high] ppm with "
                              "low < high", key="task.h_range")
        for key in ("field_mhz", "line_width_hz", "j_vicinal_hz", "j_aromatic_hz"):
            check_positive(f"task.{key}", getattr(self, key))
        check_range("task.c_points", self.c_points, 16, None)
        for key in ("dit_blocks", "hidden", "heads", "embedder_hidden", "embedder_layers",
                    "batch_size", "steps", "n_samples", "sampling_steps", "eval_batch"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        if self.hidden % self.heads:
            raise ConfigError(f"task.hidden={self.hidden} is not divisible by task.heads="
                              f"{self.heads}", key="task.hidden")
        check_range("task.modality_dropout", self.modality_dropout, 0.0, 1.0 / 3.0)
        check_range("task.lddt_weight", self.lddt_weight, 0.0, None)
        check_positive("task.lr", self.lr)
        check_range("task.ema_decay", self.ema_decay, 0.0, 1.0, high_inclusive=False)
        if len(self.cfg_weights) == 0:
            raise ConfigError("task.cfg_weights is empty; give CFG weights w >= 0",
                              key="task.cfg_weights")
        for w in self.cfg_weights:
            check_range("task.cfg_weights", float(w), 0.0, None)
        if len(self.eval_modes) == 0:
            raise ConfigError(f"task.eval_modes is empty; choose from: {', '.join(EVAL_MODES)}",
                              key="task.eval_modes")
        for mode in self.eval_modes:
            check_choice("task.eval_modes", str(mode), EVAL_MODES)
        check_positive("task.bond_timeout_s", self.bond_timeout_s)
        check_range("task.eval_targets", self.eval_targets, 0, None)
        check_range("task.overfit_n", self.overfit_n, 0, None)
        if self.h_points < 96:
            raise ConfigError(f"task.h_points={self.h_points} gives no ¹H token (the tokenizer "
                              "pools by 8·12 = 96); allowed: >= 96", key="task.h_points")
