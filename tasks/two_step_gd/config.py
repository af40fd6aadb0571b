"""Parameters of the two_step_gd task (../shared/papers/two_step_gd.md)."""

from dataclasses import dataclass

from runner.validation import ConfigError, check_positive, check_range
from tasks.base.contract import choices

MIN_SIZE = 8


Target = choices("Target", "ie1 ie2", __name__)
Activation = choices("Activation", "softplus relu_centered", __name__)
WInit = choices("WInit", "sphere gaussian", __name__)
SvMethod = choices("SvMethod", "lanczos dense", __name__)
@dataclass
class Config:
    n_hidden: int = 1000
    d_ratio: float = 1.0
    n_ratio: float = 1.0
    alpha1: float = 0.3
    alpha2: float = 0.45
    step_scale: float = 1.0
    batch_reuse: bool = False
    target: Target = Target.ie1
    activation: Activation = Activation.softplus
    w_init: WInit = WInit.sphere
    noise_std: float = 0.1
    n_top_sv: int = 10
    sv_method: SvMethod = SvMethod.lanczos

    @property
    def dim(self) -> int:
        """Return the input dimension d = round(d_ratio · N)."""
        return int(round(self.d_ratio * self.n_hidden))

    @property
    def n_samples(self) -> int:
        """Return the batch size n = round(n_ratio · N) (each of the two batches)."""
        return int(round(self.n_ratio * self.n_hidden))

    def __post_init__(self) -> None:
        check_range("task.n_hidden", self.n_hidden, MIN_SIZE, None)
        check_positive("task.d_ratio", self.d_ratio)
        check_positive("task.n_ratio", self.n_ratio)
        for key, value in (("task.d_ratio", self.dim), ("task.n_ratio", self.n_samples)):
            if value < MIN_SIZE:
                raise ConfigError(
                    f"{key} gives {value} (< {MIN_SIZE}) at task.n_hidden={self.n_hidden}; "
                    f"d = d_ratio·N and n = n_ratio·N must be >= {MIN_SIZE}")
        for key in ("alpha1", "alpha2"):
            check_range(f"task.{key}", getattr(self, key), 0.0, 0.5, high_inclusive=False)
        check_positive("task.step_scale", self.step_scale)
        check_range("task.noise_std", self.noise_std, 0.0, None)
        check_range("task.n_top_sv", self.n_top_sv, 4, min(self.n_hidden, self.dim))
