"""Parameters of the linearization task (../shared/papers/linearization.md)."""

from dataclasses import dataclass, field

from runner.validation import ConfigError, check_positive, check_range
from tasks.base.contract import choices
from tasks.small_lm.config import (
    MATRICES,
    BackboneConfig,
    CorpusConfig,
    PretrainConfig,
    check_lora_choice,
)

Downstream = choices("Downstream", "count sentiment topic bigram", __name__)
ProxMode = choices("ProxMode", "selective always off", __name__)
TrainMode = choices("TrainMode", "lora linearized both", __name__)
Loss = choices("Loss", "ce mse", __name__)
Optimizer = choices("Optimizer", "adam sgd", __name__)
Head = choices("Head", "probe random", __name__)
NTKOutput = choices("NTKOutput", "margin logits", __name__)
NTKKind = choices("NTKKind", "plain sign both", __name__)
ClosedForm = choices("ClosedForm", "auto on off", __name__)


@dataclass
class Config:
    downstream: Downstream = Downstream.count
    n_train: int = 256
    n_test: int = 1000
    label_noise: float = 0.5
    loss: Loss = Loss.ce
    prox_lambda: float = 1.0e-2
    prox_mode: ProxMode = ProxMode.selective
    train_mode: TrainMode = TrainMode.both
    optimizer: Optimizer = Optimizer.adam
    lr: float = 2.0e-3
    batch_size: int = 32
    finetune_steps: int = 300
    lora_rank: int = 4
    lora_scale: float = 1.0
    lora_init_b: float = 0.0
    lora_layers: list[int] | None = None
    lora_matrices: list[str] = field(default_factory=lambda: ["q", "v"])
    head: Head = Head.probe
    ntk_samples: int = 64
    ntk_output: NTKOutput = NTKOutput.margin
    ntk_kind: NTKKind = NTKKind.both
    closed_form: ClosedForm = ClosedForm.auto
    compute_perturbation: bool = True
    lipschitz_radii: list[float] = field(default_factory=lambda: [1.0e-3, 1.0e-2, 1.0e-1, 1.0])
    lipschitz_samples: int = 2
    vocab_size: int = 96
    seq_len: int = 32
    d_model: int = 64
    n_layers: int = 4
    n_heads: int = 4
    d_ff: int = 128
    n_topics: int = 8
    topic_tokens: int = 48
    corpus_docs: int = 20000
    pretrain_steps: int = 800
    pretrain_batch: int = 32
    pretrain_lr: float = 3.0e-3

    def __post_init__(self) -> None:
        self.backbone_config()  # sizes (d_model a multiple of n_heads, ...)
        self.corpus_config()
        self.pretrain_config()
        check_range("task.n_train", self.n_train, 2, None)
        check_range("task.n_test", self.n_test, 1, None)
        check_range("task.label_noise", self.label_noise, 0.0, None)
        check_range("task.prox_lambda", self.prox_lambda, 0.0, None)
        check_positive("task.lr", self.lr)
        check_range("task.batch_size", self.batch_size, 1, None)
        check_range("task.finetune_steps", self.finetune_steps, 1, None)
        check_range("task.lora_rank", self.lora_rank, 1, None)
        check_positive("task.lora_scale", self.lora_scale)
        check_range("task.lora_init_b", self.lora_init_b, 0.0, None)
        check_lora_choice(self.adapted_layers, list(self.lora_matrices), self.n_layers)
        check_range("task.ntk_samples", self.ntk_samples, 2, self.n_train)
        check_range("task.lipschitz_samples", self.lipschitz_samples, 1, None)
        if not self.lipschitz_radii or min(self.lipschitz_radii) <= 0:
            raise ConfigError(f"task.lipschitz_radii={list(self.lipschitz_radii)} is not "
                              "allowed: a non-empty list of positive radii",
                              key="task.lipschitz_radii")
        if self.closed_form == "on":
            needs = {"task.loss": (self.loss, "mse"), "task.prox_mode": (self.prox_mode, "always")}
            for key, (value, allowed) in needs.items():
                if value != allowed:
                    raise ConfigError(
                        f"task.closed_form=on needs {key}={allowed} (the closed form "
                        f"f0 + Θ0(Θ0 + λI)⁻¹(y − f0) holds for squared loss with the proximal "
                        f"term always on), got {key}={value}; set task.closed_form=off or auto",
                        key="task.closed_form")
            if self.train_mode == "lora":
                raise ConfigError("task.closed_form=on checks the trained linearized model: "
                                  "allowed task.train_mode: linearized, both (got lora)",
                                  key="task.closed_form")

    @property
    def adapted_layers(self) -> list[int]:
        """Return the layers with LoRA (lora_layers, or every layer when null)."""
        return list(range(self.n_layers)) if self.lora_layers is None else list(self.lora_layers)

    @property
    def runs_closed_form(self) -> bool:
        """Return whether the closed-form check runs (on; auto: mse, always, a linearized twin)."""
        if self.closed_form == "auto":
            return (self.loss == "mse" and self.prox_mode == "always"
                    and self.train_mode != "lora")
        return self.closed_form == "on"

    @property
    def trains_lora(self) -> bool:
        return self.train_mode in ("lora", "both")

    @property
    def trains_linearized(self) -> bool:
        return self.train_mode in ("linearized", "both")

    def backbone_config(self) -> BackboneConfig:
        """Return the small LM's sizes."""
        return BackboneConfig(vocab_size=self.vocab_size, seq_len=self.seq_len,
                              d_model=self.d_model, n_layers=self.n_layers,
                              n_heads=self.n_heads, d_ff=self.d_ff)

    def corpus_config(self) -> CorpusConfig:
        """Return the generated corpus's parameters (topics shared by the downstream sets)."""
        return CorpusConfig(n_topics=self.n_topics, topic_tokens=self.topic_tokens,
                            n_docs=self.corpus_docs)

    def pretrain_config(self) -> PretrainConfig:
        """Return the pretraining schedule."""
        return PretrainConfig(steps=self.pretrain_steps, batch_size=self.pretrain_batch,
                              lr=self.pretrain_lr)


__all__ = ["MATRICES", "Config"]
