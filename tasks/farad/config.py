"""Parameters of the farad task (../shared/papers/farad.md)."""

from dataclasses import dataclass

from runner.validation import ConfigError, check_choice, check_positive, check_range
from tasks.farad.splits import DIGITS_CLASS_COUNTS, longtail_counts

METHODS = ("fixmatch", "cdmad", "farad")
REFERENCES = ("auto", "none", "ones", "gray", "fourier")
# which references each method accepts; the first is what `auto` resolves to
METHOD_REFERENCES = {"fixmatch": ("none",), "cdmad": ("ones", "gray"), "farad": ("fourier",)}
REF_REFRESH = ("step", "bank")
AMP_SOURCES = ("mean", "per_image")
BIAS_AVERAGES = ("logits", "log_softmax")
PSEUDO_LABELS = ("hard", "soft")


@dataclass
class Config:
    method: str = "farad"
    reference: str = "auto"
    n_refs: int = 16
    ref_refresh: str = "step"
    amp_source: str = "mean"
    bias_average: str = "logits"
    pseudo_label: str = "hard"
    threshold: float = 0.95
    debias_start: int = 200
    iterations: int = 1000
    labeled_n1: int = 30
    gamma_l: float = 10.0
    unlabeled_m1: int = 90
    gamma_u: float = 10.0
    test_per_class: int = 50
    batch_labeled: int = 64
    unlabeled_ratio: int = 2
    strong_views: int = 2
    lambda_u: float = 1.0
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    ema_decay: float = 0.99
    hidden: int = 256
    log_every: int = 10

    @property
    def ref_kind(self) -> str:
        """Return the reference actually used: none | ones | gray | fourier (`auto` resolved)."""
        if self.reference == "auto":
            return METHOD_REFERENCES[self.method][0]
        return self.reference

    @property
    def labeled_counts(self) -> list[int]:
        """Return the labelled images per class, ⌊N_1 γ_l^{−(k−1)/9}⌋."""
        return longtail_counts(self.labeled_n1, self.gamma_l)

    @property
    def unlabeled_counts(self) -> list[int]:
        """Return the unlabelled images per class (γ_u < 1: reversed profile, max M_1)."""
        return longtail_counts(self.unlabeled_m1, self.gamma_u)

    @property
    def batch_unlabeled(self) -> int:
        """Return the unlabelled batch size, unlabeled_ratio · batch_labeled."""
        return self.unlabeled_ratio * self.batch_labeled

    def __post_init__(self) -> None:
        check_choice("task.method", self.method, METHODS)
        check_choice("task.reference", self.reference, REFERENCES)
        allowed = METHOD_REFERENCES[self.method]
        if self.reference != "auto" and self.reference not in allowed:
            raise ConfigError(
                f"task.reference={self.reference!r} does not go with task.method="
                f"{self.method!r}; choose one of: auto, {', '.join(allowed)}")
        check_choice("task.ref_refresh", self.ref_refresh, REF_REFRESH)
        check_choice("task.amp_source", self.amp_source, AMP_SOURCES)
        check_choice("task.bias_average", self.bias_average, BIAS_AVERAGES)
        check_choice("task.pseudo_label", self.pseudo_label, PSEUDO_LABELS)
        check_range("task.n_refs", self.n_refs, 1, None)
        check_range("task.threshold", self.threshold, 0.0, 1.0)
        check_range("task.debias_start", self.debias_start, 0, None)
        check_range("task.iterations", self.iterations, 1, None)
        check_range("task.labeled_n1", self.labeled_n1, 1, None)
        check_range("task.gamma_l", self.gamma_l, 1.0, None)
        check_range("task.unlabeled_m1", self.unlabeled_m1, 1, None)
        check_positive("task.gamma_u", self.gamma_u)
        check_range("task.test_per_class", self.test_per_class, 1, None)
        check_range("task.batch_labeled", self.batch_labeled, 1, None)
        check_range("task.unlabeled_ratio", self.unlabeled_ratio, 1, None)
        check_range("task.strong_views", self.strong_views, 1, None)
        check_range("task.lambda_u", self.lambda_u, 0.0, None)
        check_positive("task.lr", self.lr)
        check_range("task.momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("task.weight_decay", self.weight_decay, 0.0, None)
        check_range("task.ema_decay", self.ema_decay, 0.0, 1.0, high_inclusive=False)
        check_range("task.hidden", self.hidden, 1, None)
        check_range("task.log_every", self.log_every, 1, None)
        if min(self.labeled_counts) < 1:
            raise ConfigError(
                f"task.gamma_l={self.gamma_l:g} leaves a class without labelled images at "
                f"task.labeled_n1={self.labeled_n1} (counts {self.labeled_counts})")
        need = [self.test_per_class + n + m
                for n, m in zip(self.labeled_counts, self.unlabeled_counts)]
        short = [c for c, (n, have) in enumerate(zip(need, DIGITS_CLASS_COUNTS)) if n > have]
        if short:
            c = short[0]
            raise ConfigError(
                f"task.labeled_n1 + task.unlabeled_m1 + task.test_per_class need {need[c]} "
                f"images of class {c}, the digits have {DIGITS_CLASS_COUNTS[c]}")
