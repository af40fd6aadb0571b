"""Parameters of the optimizer_scaling task (../shared/papers/optimizer_scaling.md)."""

from dataclasses import dataclass, field

from runner.validation import ConfigError, check_choice, check_positive, check_range
from tasks.base.contract import choices

Optimizer = choices("Optimizer", "gd diag adam matrix_sign natural_gradient", __name__)
Solver = choices("Solver", "iterative closed_form", __name__)
CLOSED_FORM_OPTIMIZERS = (Optimizer.gd, Optimizer.diag, Optimizer.natural_gradient)


@dataclass
class Config:
    optimizer: Optimizer = Optimizer.gd
    n_features: int = 256
    s: float = 1.0
    latent_dim: int = 4096
    n_train: int = 8192
    n_val: int = 2048
    noise_std: float = 0.05
    steps: int = 50
    n_outputs: int = 1
    lr_grid: list[float] = field(default_factory=lambda: [3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0,
                                                           10.0])
    sign_lr_grid: list[float] = field(default_factory=lambda: [0.01, 0.03, 0.1, 0.3, 1.0, 3.0,
                                                                10.0, 30.0, 100.0, 300.0])
    ng_eps: float = 1e-8
    solver: Solver = Solver.iterative
    population: bool = False
    max_features: int = 2048

    def __post_init__(self) -> None:
        if self.solver == "closed_form":
            check_choice("task.optimizer (with task.solver=closed_form)", self.optimizer,
                         CLOSED_FORM_OPTIMIZERS)
        for key in ("n_features", "latent_dim", "n_train", "n_val", "steps", "n_outputs", "max_features"):
            check_range(f"task.{key}", getattr(self, key), 1, None)
        check_range("task.s", self.s, 0, None, low_inclusive=False)
        check_range("task.noise_std", self.noise_std, 0, None)
        check_positive("task.ng_eps", self.ng_eps)
        if self.n_features > self.max_features:
            raise ConfigError(
                f"task.n_features={self.n_features} exceeds task.max_features="
                f"{self.max_features} (features are nested rows of one F_max); raise max_features"
            )
        for key in ("lr_grid", "sign_lr_grid"):
            values = getattr(self, key)
            if not values or any(v <= 0 for v in values):
                raise ConfigError(f"task.{key}={values} must be a non-empty list of positive lrs")
