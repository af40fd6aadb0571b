"""Parameters of the farad task (../shared/papers/farad.md)."""

from dataclasses import dataclass

from runner.validation import ConfigError, check_positive, check_range
from tasks.base.contract import choices
from tasks.farad.splits import DIGITS_CLASS_COUNTS, longtail_counts

Method = choices("Method", "fixmatch cdmad farad", __name__)
Reference = choices("Reference", "auto none ones gray fourier", __name__)
RefRefresh = choices("RefRefresh", "step bank", __name__)
AmpSource = choices("AmpSource", "mean per_image", __name__)
BiasAverage = choices("BiasAverage", "logits log_softmax", __name__)
PseudoLabel = choices("PseudoLabel", "hard soft", __name__)
# which references each method accepts; the first is what `auto` resolves to
METHOD_REFERENCES = {"fixmatch": ("none",), "cdmad": ("ones", "gray"), "farad": ("fourier",)}


def resolve_reference(method: str, reference: str) -> str:
    """Return the reference actually used: none | ones | gray | fourier (`auto` resolved)."""
    return METHOD_REFERENCES[str(method)][0] if reference == "auto" else str(reference)


@dataclass
class Config:
    method: Method = Method.farad
    reference: Reference = Reference.auto
    n_refs: int = 16
    ref_refresh: RefRefresh = RefRefresh.step
    amp_source: AmpSource = AmpSource.mean
    bias_average: BiasAverage = BiasAverage.logits
    pseudo_label: PseudoLabel = PseudoLabel.hard
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
        return resolve_reference(self.method, self.reference)

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
        allowed = METHOD_REFERENCES[self.method]
        if self.reference != "auto" and self.reference not in allowed:
            raise ConfigError(
                f"task.reference={str(self.reference)!r} does not go with task.method="
                f"{str(self.method)!r}; choose one of: auto, {', '.join(allowed)}")
        check_range("task.n_refs", self.n_refs, 1, None)
        check_range("task.threshold", self.threshold, 0.0, 1.0)
        check_range("task.debias_start", self.debias_start, 0, None)
        check_range("task.iterations", self.iterations, 1, None)
        if self.method != "fixmatch" and self.debias_start >= self.iterations:
            raise ConfigError(
                f"task.debias_start={self.debias_start} >= task.iterations={self.iterations}: "
                f"{self.method} would never debias; choose debias_start < iterations",
                key="task.debias_start")
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
