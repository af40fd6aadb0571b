"""Parameters of the mamba_modulation task (../shared/papers/mamba_modulation.md)."""

from dataclasses import dataclass, field

from runner.validation import ConfigError, check_positive, check_range
from tasks.base.contract import choices

Setting = choices("Setting", "lm passkey", __name__)
AInit = choices("AInit", "long_memory standard", __name__)
Intervention = choices("Intervention", "none a_power_uniform a_power_spsa delta_spsa a_backprop",
                       __name__)
Backbone = choices("Backbone", "mambapy inhouse", __name__)

BYTE_VOCAB = 256      # lm: byte-level vocabulary
PASSKEY_SPECIAL = 12  # passkey: 10 digits, KEY, QUERY after the filler tokens


@dataclass
class Config:
    setting: Setting = Setting.lm
    a_init: AInit = AInit.long_memory
    d_model: int = 64
    n_layers: int = 2
    d_state: int = 16
    expand: int = 2
    vocab_size: int | None = None
    filler_states: int = 16
    corpus_bytes: int = 4_000_000
    train_len: int = 64
    train_steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    lm_loss_weight: float = 0.1
    eval_multipliers: list[float] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    tail_tokens: int = 64
    n_depths: int = 5
    eval_sequences: int = 16
    calib_sequences: int = 16
    intervention: Intervention = Intervention.a_power_uniform
    scale_grid: list[float] = field(default_factory=lambda: [1.0, 0.9, 0.8, 0.6, 0.4, 0.2])
    spsa_iters: int = 30
    spsa_init: list[float] = field(default_factory=lambda: [0.75, 1.0])
    scale_min: float = 0.01
    backprop_steps: int = 20
    backprop_lr: float = 1e-2
    backbone: Backbone = Backbone.mambapy

    @property
    def vocab(self) -> int:
        """Return the vocabulary size: vocab_size, or 256 (lm bytes) / filler_states + 12
        (passkey) when it is null."""
        if self.vocab_size is not None:
            return int(self.vocab_size)
        return BYTE_VOCAB if self.setting == "lm" else self.filler_states + PASSKEY_SPECIAL

    def lengths(self) -> list[int]:
        """Return the evaluation lengths round(m · train_len), one per eval multiplier."""
        return [max(1, int(round(m * self.train_len))) for m in self.eval_multipliers]

    def __post_init__(self) -> None:
        for key in ("d_model", "n_layers", "d_state", "expand", "filler_states", "train_len",
                    "batch_size", "tail_tokens", "n_depths", "eval_sequences",
                    "calib_sequences", "corpus_bytes"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        check_range("task.train_steps", self.train_steps, 0, None)
        check_range("task.spsa_iters", self.spsa_iters, 0, None)
        check_range("task.backprop_steps", self.backprop_steps, 0, None)
        check_positive("task.lr", self.lr)
        check_positive("task.backprop_lr", self.backprop_lr)
        check_range("task.lm_loss_weight", self.lm_loss_weight, 0.0, None)
        check_range("task.scale_min", self.scale_min, 0.0, 1.0, low_inclusive=False)
        if not self.eval_multipliers:
            raise ConfigError("task.eval_multipliers is empty; give at least one multiplier > 0",
                              key="task.eval_multipliers")
        for m in self.eval_multipliers:
            check_positive("task.eval_multipliers (each multiplier)", m)
        if len(set(self.lengths())) != len(self.eval_multipliers):
            raise ConfigError(f"task.eval_multipliers={list(self.eval_multipliers)} give repeated "
                              f"lengths {self.lengths()} at train_len={self.train_len}",
                              key="task.eval_multipliers")
        if not self.scale_grid:
            raise ConfigError("task.scale_grid is empty", key="task.scale_grid")
        for s in self.scale_grid:
            check_range("task.scale_grid (each scale)", s, self.scale_min, 1.0)
        if len(self.spsa_init) != 2 or self.spsa_init[0] > self.spsa_init[1]:
            raise ConfigError(f"task.spsa_init={list(self.spsa_init)} must be [low, high] with "
                              "low <= high", key="task.spsa_init")
        for s in self.spsa_init:
            check_range("task.spsa_init (each bound)", s, self.scale_min, 1.0)
        if self.setting == "lm":
            if self.vocab != BYTE_VOCAB:
                raise ConfigError(f"task.vocab_size={self.vocab_size} with task.setting=lm; the "
                                  f"byte corpus needs {BYTE_VOCAB} (or null)",
                                  key="task.vocab_size")
        else:
            need = self.filler_states + PASSKEY_SPECIAL
            check_range("task.vocab_size", self.vocab, need, None)
            check_range("task.train_len", self.train_len, 8, None)
