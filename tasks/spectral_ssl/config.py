"""Parameters of the spectral_ssl task (../shared/papers/spectral_ssl.md)."""

from dataclasses import dataclass

from runner.validation import check_positive, check_range
from tasks.base.contract import choices

MAX_ATTR = 16  # 2x2 patch positions on the 8x8 grid
SSLMethod = choices("SSLMethod", "simclr simsiam", __name__)
RegForm = choices("RegForm", "flat_pr kl_uniform frobenius", __name__)
RegLayer = choices("RegLayer", "backbone projector", __name__)
SpuriousKind = choices("SpuriousKind", "patch colour", __name__)
ProbeScaling = choices("ProbeScaling", "global standard", __name__)


@dataclass
class Config:
    ssl_method: SSLMethod = SSLMethod.simclr
    reg_beta: float = 0.1
    reg_form: RegForm = RegForm.flat_pr
    reg_layer: RegLayer = RegLayer.backbone
    spurious_rho: float = 0.95
    n_attr: int = 10
    spurious_kind: SpuriousKind = SpuriousKind.patch
    temperature: float = 0.5
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1.0e-3
    weight_decay: float = 0.0
    hidden_dim: int = 256
    rep_dim: int = 128
    proj_dim: int = 64
    test_frac: float = 0.2
    aug_shift: int = 1
    aug_noise: float = 0.1
    aug_erase_prob: float = 0.5
    aug_erase_max: int = 3
    n_eval: int = 512
    probe_c: float = 1.0
    probe_scaling: ProbeScaling = ProbeScaling["global"]
    probe_max_iter: int = 500
    pc_top_k: int = 1

    def __post_init__(self) -> None:
        check_range("task.reg_beta", self.reg_beta, 0.0, None)
        check_range("task.spurious_rho", self.spurious_rho, 0.0, 1.0)
        check_range("task.n_attr", self.n_attr, 2, MAX_ATTR)
        check_positive("task.temperature", self.temperature)
        check_range("task.steps", self.steps, 1, None)
        check_range("task.batch_size", self.batch_size, 2, None)  # a covariance needs 2 rows
        check_positive("task.lr", self.lr)
        check_range("task.weight_decay", self.weight_decay, 0.0, None)
        for key in ("hidden_dim", "rep_dim", "proj_dim"):
            check_range(f"task.{key}", getattr(self, key), 2, None)
        check_range("task.test_frac", self.test_frac, 0.05, 0.5)
        check_range("task.aug_shift", self.aug_shift, 0, 3)
        check_range("task.aug_noise", self.aug_noise, 0.0, None)
        check_range("task.aug_erase_prob", self.aug_erase_prob, 0.0, 1.0)
        check_range("task.aug_erase_max", self.aug_erase_max, 1, 6)
        check_range("task.n_eval", self.n_eval, 16, None)
        check_positive("task.probe_c", self.probe_c)
        check_range("task.probe_max_iter", self.probe_max_iter, 10, None)
        check_range("task.pc_top_k", self.pc_top_k, 1, self.rep_dim)
