"""Parameters of the mixat task (../shared/papers/mixat.md)."""

from dataclasses import dataclass, field

from runner.validation import ConfigError, check_positive, check_range
from tasks.base.contract import choices
from tasks.small_lm.config import BackboneConfig

Defense = choices("Defense", "none cat discrete dual mixat mixat_gcg", __name__)
Finetune = choices("Finetune", "lora full", __name__)
ATTACKS = ("direct", "pap", "gcg", "template", "sampling", "embedding")

# the paper's schedule per defence when mix_ratio / gcg_ratio are null: (PAP share, GCG share)
PAPER_RATIOS = {"none": (0.0, 0.0), "cat": (0.0, 0.0), "discrete": (0.9, 0.1),
                "dual": (0.5, 0.0), "mixat": (0.5, 0.0), "mixat_gcg": (0.45, 0.1)}
USES_DELTA = {"none": "never", "cat": "always", "discrete": "never", "dual": "direct",
              "mixat": "always", "mixat_gcg": "always"}  # dual: δ only on steps without a rewrite


@dataclass
class Config:
    defense: Defense = Defense.none
    attacks: list[str] = field(default_factory=lambda: list(ATTACKS))
    train_frames: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    heldout_frames: list[int] = field(default_factory=lambda: [5, 6, 7])
    mix_ratio: float | None = None
    gcg_ratio: float | None = None
    eps_rel: float = 0.075
    pgd_steps: int = 10
    pgd_lr: float = 0.1
    pgd_eval_steps: int = 40
    away_weight: float = 0.5
    toward_weight: float = 0.5
    util_weight: float = 1.0
    away_cutoff: float = 5.0
    toward_floor: float = 0.5
    adv_fraction: float = 0.125
    defense_steps: int = 200
    batch_size: int = 64
    finetune: Finetune = Finetune.lora
    lr: float | None = None
    weight_decay: float = 0.001
    grad_clip: float = 0.3
    warmup_frac: float = 0.03
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_scale: float = 1.0
    dynamic_discrete: bool = True
    gcg_steps: int = 60
    gcg_topk: int = 16
    gcg_candidates: int = 64
    gcg_suffix_len: int = 6
    gcg_train_steps: int = 5
    eval_temperatures: list[float] = field(default_factory=lambda: [0.7, 1.0])
    eval_samples: int = 10
    hessian_k: int = 4
    hole_gate: bool = True
    test_contexts: int = 10
    train_contexts: int = 16
    n_utility: int = 4096
    n_harmful: int = 12
    n_benign: int = 24
    n_fillers: int = 16
    n_frames: int = 8
    n_test_topics: int = 4
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512
    pretrain_docs: int = 16000
    pretrain_steps: int = 400
    pretrain_batch: int = 64
    pretrain_lr: float = 1.0e-3
    sft_docs: int = 4000
    sft_steps: int = 160
    sft_batch: int = 64
    sft_lr: float = 3.0e-4

    def __post_init__(self) -> None:
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks or len(set(self.attacks)) != len(self.attacks):
            raise ConfigError(f"task.attacks={list(self.attacks)} is not allowed: a non-empty list "
                              f"of distinct attacks among {', '.join(ATTACKS)}"
                              + (f" (unknown: {', '.join(map(str, bad))})" if bad else ""),
                              key="task.attacks")
        check_range("task.n_frames", self.n_frames, 2, None)
        for key in ("train_frames", "heldout_frames"):
            frames = [int(f) for f in getattr(self, key)]
            if not frames or len(set(frames)) != len(frames) or not all(
                    0 <= f < self.n_frames for f in frames):
                raise ConfigError(f"task.{key}={frames} is not allowed: distinct frame indices "
                                  f"in 0..{self.n_frames - 1}, at least one", key=f"task.{key}")
        both = sorted(set(self.train_frames) & set(self.heldout_frames))
        if both:
            raise ConfigError(f"task.train_frames={list(self.train_frames)} lists the held-out "
                              f"frame(s) {both} of task.heldout_frames={list(self.heldout_frames)}"
                              ": the held-out frames must never appear in training",
                              key="task.train_frames")
        for key in ("mix_ratio", "gcg_ratio"):
            value = getattr(self, key)
            if value is not None:
                check_range(f"task.{key}", value, 0.0, 1.0)
        pap, gcg = self.ratios
        if pap + gcg > 1.0 + 1e-12:
            raise ConfigError(f"task.mix_ratio + task.gcg_ratio = {pap} + {gcg} = {pap + gcg} "
                              f"is above 1 (the shares of steps with a PAP rewrite and with a GCG "
                              f"suffix; null = the paper's value for task.defense={self.defense})",
                              key="task.mix_ratio")
        check_positive("task.eps_rel", self.eps_rel)
        check_range("task.pgd_steps", self.pgd_steps, 1, None)
        check_positive("task.pgd_lr", self.pgd_lr)
        check_range("task.pgd_eval_steps", self.pgd_eval_steps, 1, None)
        for key in ("away_weight", "toward_weight", "util_weight"):
            check_range(f"task.{key}", getattr(self, key), 0.0, None)
        check_positive("task.away_cutoff", self.away_cutoff)
        check_range("task.toward_floor", self.toward_floor, 0.0, None)
        check_range("task.adv_fraction", self.adv_fraction, 0.0, 1.0, low_inclusive=False,
                    high_inclusive=False)
        check_range("task.defense_steps", self.defense_steps, 1, None)
        check_range("task.batch_size", self.batch_size, 2, None)
        if self.lr is not None:
            check_positive("task.lr", self.lr)
        check_range("task.weight_decay", self.weight_decay, 0.0, None)
        check_positive("task.grad_clip", self.grad_clip)
        check_range("task.warmup_frac", self.warmup_frac, 0.0, 1.0, high_inclusive=False)
        check_range("task.lora_rank", self.lora_rank, 1, None)
        check_positive("task.lora_alpha", self.lora_alpha)
        check_range("task.lora_scale", self.lora_scale, 0.0, None)
        check_range("task.gcg_steps", self.gcg_steps, 1, None)
        check_range("task.gcg_topk", self.gcg_topk, 1, None)
        check_range("task.gcg_candidates", self.gcg_candidates, 1, None)
        check_range("task.gcg_suffix_len", self.gcg_suffix_len, 1, None)
        check_range("task.gcg_train_steps", self.gcg_train_steps, 1, None)
        if not self.eval_temperatures or min(self.eval_temperatures) <= 0:
            raise ConfigError(f"task.eval_temperatures={list(self.eval_temperatures)} is not "
                              "allowed: a non-empty list of positive temperatures",
                              key="task.eval_temperatures")
        check_range("task.eval_samples", self.eval_samples, 1, None)
        check_range("task.hessian_k", self.hessian_k, 0, None)
        check_range("task.test_contexts", self.test_contexts, 1, None)
        check_range("task.train_contexts", self.train_contexts, 1, None)
        check_range("task.n_utility", self.n_utility, 2, None)
        check_range("task.n_harmful", self.n_harmful, 2, None)
        check_range("task.n_test_topics", self.n_test_topics, 1, self.n_harmful - 1)
        for key in ("n_benign", "n_fillers"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        self.backbone_config()
        for key in ("pretrain_docs", "pretrain_batch", "sft_docs", "sft_batch"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        for key in ("pretrain_steps", "sft_steps"):
            check_range(f"task.{key}", getattr(self, key), 0, None)
        check_positive("task.pretrain_lr", self.pretrain_lr)
        check_positive("task.sft_lr", self.sft_lr)
        self.topic_tokens_fit()

    @property
    def ratios(self) -> tuple[float, float]:
        """Return (PAP share, GCG share) of the adversarial steps for this defence (a null key
        takes the paper's value, PAPER_RATIOS)."""
        pap, gcg = PAPER_RATIOS[str(self.defense)]
        return (pap if self.mix_ratio is None else float(self.mix_ratio),
                gcg if self.gcg_ratio is None else float(self.gcg_ratio))

    @property
    def learning_rate(self) -> float:
        """Return lr, or the spec's AdamW lr: 2e-4 (LoRA), 1e-3 (full fine-tuning)."""
        if self.lr is not None:
            return float(self.lr)
        return 2.0e-4 if self.finetune == "lora" else 1.0e-3

    @property
    def n_adv(self) -> int:
        """Return the adversarial behaviours per batch (at least 1)."""
        return max(1, round(self.batch_size * self.adv_fraction))

    def language(self):
        """Return the chat language's sizes (tasks.mixat.language.Language)."""
        from tasks.mixat.language import Language

        return Language(n_harmful=self.n_harmful, n_benign=self.n_benign,
                        n_fillers=self.n_fillers, n_frames=self.n_frames,
                        n_test_topics=self.n_test_topics)

    def topic_tokens_fit(self) -> None:
        """Raise ConfigError when the alias or content pools cannot name every topic."""
        topics = self.n_harmful + self.n_benign
        if topics > 16 * 15:
            raise ConfigError(f"task.n_harmful + task.n_benign = {topics} exceeds the 240 "
                              "distinct 2-token aliases of the alias pool", key="task.n_benign")

    def backbone_config(self) -> BackboneConfig:
        """Return the LM's sizes (the vocabulary follows from the language)."""
        vocab = 12 + self.n_harmful + self.n_benign + self.n_fillers + self.n_frames + 16 + 16
        return BackboneConfig(vocab_size=vocab, seq_len=32, d_model=self.d_model,
                              n_layers=self.n_layers, n_heads=self.n_heads, d_ff=self.d_ff)

    def stage_configs(self):
        """Return (stage 1, stage 2) StageConfigs (tasks.mixat.stages)."""
        from tasks.mixat.stages import StageConfig

        return (StageConfig(self.pretrain_docs, self.pretrain_steps, self.pretrain_batch,
                            self.pretrain_lr),
                StageConfig(self.sft_docs, self.sft_steps, self.sft_batch, self.sft_lr))
