"""Parameters of the ei_network task (../shared/papers/ei_network.md).

Preset resolution: every network parameter (mean couplings, ranges, heterogeneity, density)
defaults to None, meaning "the preset's value" (or the spec's default, the `stable` preset's
values, when `preset` is None). A value given explicitly overrides the preset. `__post_init__`
fills the Nones in, so after construction every field holds a number.
"""

import math
from dataclasses import dataclass

from runner.validation import ConfigError, check_choice, check_positive, check_range
from tasks.base.contract import choices

# ḡ as (EE, IE, EI, II), d in the same order (paper size N_E = 40,000), g, density α.
PRESETS: dict[str, dict[str, float]] = {
    "stable": dict(gbar_ee=8.55, gbar_ie=11.7, gbar_ei=-9.0, gbar_ii=-9.0, range_ee=0.07,
                   range_ie=0.07, range_ei=0.07, range_ii=0.07, g_het=0.1, density=0.95),
    "global_sync": dict(gbar_ee=13.05, gbar_ie=9.45, gbar_ei=-9.0, gbar_ii=-9.0, range_ee=0.07,
                        range_ie=0.07, range_ei=0.07, range_ii=0.07, g_het=0.1, density=0.95),
    "global_osc": dict(gbar_ee=13.05, gbar_ie=15.3, gbar_ei=-9.0, gbar_ii=-9.0, range_ee=0.07,
                       range_ie=0.07, range_ei=0.07, range_ii=0.07, g_het=0.1, density=0.95),
    "bump": dict(gbar_ee=9.0, gbar_ie=10.8, gbar_ei=-9.0, gbar_ii=-9.0, range_ee=0.05,
                 range_ie=0.05, range_ei=0.07, range_ii=0.07, g_het=0.1, density=0.95),
    "wave": dict(gbar_ee=9.0, gbar_ie=15.48, gbar_ei=-9.0, gbar_ii=-9.0, range_ee=0.05,
                 range_ie=0.05, range_ei=0.07, range_ii=0.07, g_het=0.1, density=0.95),
    "chaos": dict(gbar_ee=5.5, gbar_ie=5.0, gbar_ei=-5.0, gbar_ii=-4.25, range_ee=0.05,
                  range_ie=0.05, range_ei=0.05, range_ii=0.085, g_het=0.9, density=0.95),
}
SPEC_DEFAULT_PRESET = "stable"
N_REF = 40_000  # the paper's N_E: the ranges above are for this size
N_REF_1D = 800  # 1D reference: ranges ×2 at N_E = 800 keep all six labels (the spec)
SCALE_1D = 2.0
POPS = ("ee", "ie", "ei", "ii")  # (post, pre): E←E, I←E, E←I, I←I


Preset = choices("Preset", " ".join(PRESETS), __name__)
Mode = choices("Mode", "simulate infer", __name__)
EigMethod = choices("EigMethod", "dense sparse none", __name__)


@dataclass
class Config:
    preset: Preset | None = Preset.bump
    mode: Mode = Mode.simulate
    dim: int = 2
    n_exc: int = 2500
    inh_ratio: float = 0.25
    density: float | None = None
    gbar_ee: float | None = None
    gbar_ie: float | None = None
    gbar_ei: float | None = None
    gbar_ii: float | None = None
    range_ee: float | None = None
    range_ie: float | None = None
    range_ei: float | None = None
    range_ii: float | None = None
    range_scale: float | None = None
    g_het: float | None = None
    tau: float = 20.0
    dt: float = 0.2
    t_total: float = 1000.0
    record_every: int = 10
    noise_std: float = 0.1
    inh_gain_scale: float = 5.0
    init_low: float = -3.5
    init_high: float = 6.5
    eig_method: EigMethod = EigMethod.dense
    n_max_wave: int = 12
    burn_in: float = 500.0
    sparse_subset: int = 2000
    thr_activity: float = 0.1
    thr_global_sync: float = 0.5
    thr_local_sync: float = 0.4
    thr_moran: float = 0.3
    thr_static: float = 0.15
    thr_osc_std: float = 0.1
    infer_steps: int = 300
    infer_lr: float = 0.05
    infer_train_frac: float = 0.7

    def __post_init__(self) -> None:
        base = PRESETS[self.preset or SPEC_DEFAULT_PRESET]
        for key, value in base.items():
            if getattr(self, key) is None:
                setattr(self, key, float(value))
        check_choice("task.dim", self.dim, [1, 2])
        check_range("task.n_exc", self.n_exc, 4, None)
        check_range("task.inh_ratio", self.inh_ratio, 0, 1, low_inclusive=False)
        check_range("task.density", self.density, 0, 1, low_inclusive=False)
        for pop in POPS:
            check_positive(f"task.range_{pop}", getattr(self, f"range_{pop}"))
        if self.range_scale is not None:
            check_positive("task.range_scale", self.range_scale)
        check_range("task.gbar_ee", self.gbar_ee, 0, None)
        check_range("task.gbar_ie", self.gbar_ie, 0, None)
        check_range("task.gbar_ei", self.gbar_ei, None, 0)
        check_range("task.gbar_ii", self.gbar_ii, None, 0)
        check_range("task.g_het", self.g_het, 0, None)
        for key in ("tau", "dt", "t_total", "inh_gain_scale", "infer_lr"):
            check_positive(f"task.{key}", getattr(self, key))
        check_range("task.dt", self.dt, 0, self.tau, low_inclusive=False)
        check_range("task.noise_std", self.noise_std, 0, None)
        check_range("task.record_every", self.record_every, 1, None)
        check_range("task.n_max_wave", self.n_max_wave, 1, None)
        check_range("task.sparse_subset", self.sparse_subset, 16, None)
        check_range("task.infer_steps", self.infer_steps, 1, None)
        check_range("task.infer_train_frac", self.infer_train_frac, 0.1, 0.95)
        check_range("task.burn_in", self.burn_in, 0, self.t_total, high_inclusive=False)
        if self.init_high < self.init_low:
            raise ConfigError(f"task.init_high={self.init_high} must be >= task.init_low="
                              f"{self.init_low}")
        n_frames = int(round((self.t_total - self.burn_in) / (self.dt * self.record_every)))
        if n_frames < 8:
            raise ConfigError(f"task.t_total - task.burn_in = {self.t_total - self.burn_in} "
                              f"leaves {n_frames} recorded frames (need >= 8); lower "
                              "task.record_every or raise task.t_total")
        self._check_grid()

    def _check_grid(self) -> None:
        """Raise ConfigError unless N_E, N_I sit on regular grids (squares in 2D)."""
        n_inh = self.n_exc * self.inh_ratio
        if abs(n_inh - round(n_inh)) > 1e-9 or round(n_inh) < 1:
            raise ConfigError(f"task.inh_ratio={self.inh_ratio}: N_I = n_exc·inh_ratio = {n_inh}"
                              " is not a whole number of units")
        if self.dim == 2:
            for key, n in (("task.n_exc", self.n_exc), ("task.inh_ratio (N_I)", round(n_inh))):
                side = math.isqrt(n)
                if side * side != n:
                    raise ConfigError(f"{key}={n} does not fit the 2D grid: it must be a perfect "
                                      "square (√N×√N units on the torus)")
        if self.mode == "infer" and self.side_exc % self.side_inh != 0:
            raise ConfigError(f"task.inh_ratio={self.inh_ratio}: with task.mode=infer the E grid "
                              f"side ({self.side_exc}) must be a multiple of the I grid side "
                              f"({self.side_inh})")

    # ---------------------------------------------------------------- derived sizes
    @property
    def n_inh(self) -> int:
        """N_I = N_E·inh_ratio."""
        return int(round(self.n_exc * self.inh_ratio))

    @property
    def side_exc(self) -> int:
        """Units per dimension of the E grid."""
        return self.n_exc if self.dim == 1 else math.isqrt(self.n_exc)

    @property
    def side_inh(self) -> int:
        """Units per dimension of the I grid."""
        return self.n_inh if self.dim == 1 else math.isqrt(self.n_inh)

    @property
    def scale(self) -> float:
        """Range scale: explicit, else √(N_ref/N_E) in 2D and 2·800/N_E in 1D (keeps K fixed)."""
        if self.range_scale is not None:
            return float(self.range_scale)
        if self.dim == 2:
            return math.sqrt(N_REF / self.n_exc)
        return SCALE_1D * N_REF_1D / self.n_exc

    def gbar(self) -> dict[str, float]:
        """Return the mean couplings ḡ_ab keyed by 'ee', 'ie', 'ei', 'ii'."""
        return {p: float(getattr(self, f"gbar_{p}")) for p in POPS}

    def ranges(self) -> dict[str, float]:
        """Return the effective ranges d_ab·range_scale keyed by 'ee', 'ie', 'ei', 'ii'."""
        return {p: float(getattr(self, f"range_{p}")) * self.scale for p in POPS}
