"""Parameters of the ei_network task (../shared/papers/ei_network.md).

Preset resolution: every network parameter (mean couplings, ranges, heterogeneity, density)
defaults to None, meaning "the preset's value" (or the spec's default, the `stable` preset's
values, when `preset` is None). A value given explicitly overrides the preset. `__post_init__`
fills the Nones in, so after construction every field holds a number.

Clipping rule (never silent): the wrapped kernel's peak connection probability
α·(Σ_m e^{−m²/(2d²)})^dim exceeds 1 once the ranges are wide (small N_E at fixed K), and the draw
clips p at 1, which removes a share s_ab = Σ max(p − 1, 0)/Σ p of the in-degree K_ab that the
theory assumes. Every block's peak and share are computed here, before any draw, from the grids
alone (`connectivity.block_clipping`). A config with s_ab > MAX_CLIPPED_SHARE in any block is
refused (ConfigError naming task.n_exc, or task.range_scale when it is explicit, with the peak,
the share and the nearest value that fits); below it the run goes on, logs the clip once and
reports the measured shares in paper_metrics (`clipped_share`, `clipped_share_<ab>`).
"""

import math
from collections.abc import Callable
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
# The clipping rule's bound on s_ab = 1 − K_ab(clipped)/K_ab, set by the spec's tolerances, not
# by the presets. Clipping removes nonnegative mass from the kernel, so each entry of the mean
# mode matrix M(k) moves by at most |ḡ_ab|·s_ab; measured on E[J] (dense eig, 2D), the outliers
# move by ≈ 19·s (wave) and ≈ 9·s (chaos) and R by ≲ 0.1% per 1e-3 of s. At 1e-3 that is ≲ 0.02,
# a fifth of the spec's 0.1 outlier tolerance (and below the finite-K scatter, 0.05–0.19), and
# R well inside its 5%. The presets are far from it on both sides: 0 (chaos 2.2e-6) at
# N_E = 2,500, 1.6e-4 at 1,600 (chaos 7.5e-2), ≥ 0.23 at 900.
MAX_CLIPPED_SHARE = 1e-3
N_SEARCH_MAX = 4 * N_REF  # the largest N_E the "smallest n_exc that fits" search tries


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
        self._check_clipping()

    def _check_grid(self) -> None:
        """Raise ConfigError unless N_E, N_I sit on regular grids (squares in 2D)."""
        problem = grid_problem(self.n_exc, self.inh_ratio, self.dim)
        if problem is not None:
            raise ConfigError(problem)
        if self.mode == "infer" and self.side_exc % self.side_inh != 0:
            raise ConfigError(f"task.inh_ratio={self.inh_ratio}: with task.mode=infer the E grid "
                              f"side ({self.side_exc}) must be a multiple of the I grid side "
                              f"({self.side_inh})")

    def _check_clipping(self) -> None:
        """Raise ConfigError when clipping p at 1 would remove more than MAX_CLIPPED_SHARE of
        some block's expected in-degree K_ab (the clipping rule of the module docstring)."""
        clip = self.clipping()
        if worst_share(clip) <= MAX_CLIPPED_SHARE:
            return
        raise ConfigError(clipping_message(self, clip),
                          key="task.range_scale" if self.range_scale is not None else "task.n_exc")

    def clipping(self, n_exc: int | None = None, scale: float | None = None,
                 density: float | None = None) -> dict[str, tuple[float, float]]:
        """Return {block: (peak p, clipped share s_ab)} (`connectivity.block_clipping`) on the
        grids of this N_E (or `n_exc`), with the ranges × this scale (or `scale`; for another
        `n_exc` the automatic one unless range_scale is explicit) and this α (or `density`)."""
        n = self.n_exc if n_exc is None else n_exc
        if scale is None:
            scale = self.range_scale if self.range_scale is not None else auto_scale(n, self.dim)
        alpha = self.density if density is None else density
        sides = grid_sides(n, self.inh_ratio, self.dim)
        from tasks.ei_network.connectivity import block_clipping  # torch: only once it is used

        return {p: block_clipping(sides[p[0]], sides[p[1]], float(getattr(self, f"range_{p}"))
                                  * scale, alpha, self.dim) for p in POPS}

    # ---------------------------------------------------------------- derived sizes
    @property
    def n_inh(self) -> int:
        """N_I = N_E·inh_ratio."""
        return int(round(self.n_exc * self.inh_ratio))

    @property
    def side_exc(self) -> int:
        """Units per dimension of the E grid."""
        return grid_sides(self.n_exc, self.inh_ratio, self.dim)["e"]

    @property
    def side_inh(self) -> int:
        """Units per dimension of the I grid."""
        return grid_sides(self.n_exc, self.inh_ratio, self.dim)["i"]

    @property
    def scale(self) -> float:
        """Range scale: explicit, else √(N_ref/N_E) in 2D and 2·800/N_E in 1D (keeps K fixed)."""
        if self.range_scale is not None:
            return float(self.range_scale)
        return auto_scale(self.n_exc, self.dim)

    def gbar(self) -> dict[str, float]:
        """Return the mean couplings ḡ_ab keyed by 'ee', 'ie', 'ei', 'ii'."""
        return {p: float(getattr(self, f"gbar_{p}")) for p in POPS}

    def ranges(self) -> dict[str, float]:
        """Return the effective ranges d_ab·range_scale keyed by 'ee', 'ie', 'ei', 'ii'."""
        return {p: float(getattr(self, f"range_{p}")) * self.scale for p in POPS}


def auto_scale(n_exc: int, dim: int) -> float:
    """Return the range scale that keeps K fixed: √(N_ref/N_E) in 2D, 2·800/N_E in 1D."""
    if dim == 2:
        return math.sqrt(N_REF / n_exc)
    return SCALE_1D * N_REF_1D / n_exc


def grid_problem(n_exc: int, inh_ratio: float, dim: int) -> str | None:
    """Return why N_E and N_I = N_E·inh_ratio do not fit the grids (N_I not a whole number ≥ 1;
    in 2D, either not a perfect square), or None when they fit."""
    n_inh = n_exc * inh_ratio
    if abs(n_inh - round(n_inh)) > 1e-9 or round(n_inh) < 1:
        return (f"task.inh_ratio={inh_ratio}: N_I = n_exc·inh_ratio = {n_inh} is not a whole "
                "number of units")
    if dim == 2:
        for key, n in (("task.n_exc", n_exc), ("task.inh_ratio (N_I)", round(n_inh))):
            if math.isqrt(n) ** 2 != n:
                return (f"{key}={n} does not fit the 2D grid: it must be a perfect square "
                        "(√N×√N units on the torus)")
    return None


def grid_sides(n_exc: int, inh_ratio: float, dim: int) -> dict[str, int]:
    """Return the units per dimension {'e': side_E, 'i': side_I}: N (1D) or ⌊√N⌋ (2D), with
    N_I = round(N_E·inh_ratio)."""
    n = {"e": n_exc, "i": int(round(n_exc * inh_ratio))}
    return n if dim == 1 else {k: math.isqrt(v) for k, v in n.items()}


def grid_sizes(inh_ratio: float, dim: int, low: int, high: int) -> list[int]:
    """Return every N_E in [low, high] that fits the grids (`grid_problem` is None), ascending."""
    if dim == 1:
        candidates = range(low, high + 1)
    else:
        candidates = [s * s for s in range(math.isqrt(max(low - 1, 0)) + 1, math.isqrt(high) + 1)]
    return [n for n in candidates if grid_problem(n, inh_ratio, dim) is None]


def worst_share(clip: dict[str, tuple[float, float]]) -> float:
    """Return max_ab s_ab of a `Config.clipping` result."""
    return max(share for _, share in clip.values())


def smallest_fitting_n_exc(cfg: Config) -> int | None:
    """Return the smallest grid size N_E > cfg.n_exc (≤ N_SEARCH_MAX) at which, under the
    automatic range scale, every s_ab ≤ MAX_CLIPPED_SHARE; None when there is none.

    Bisection over the grid sizes (every size it returns was checked to fit): at fixed K the
    ranges shrink as N_E grows, every p falls and so does s_ab (monotone for every preset in
    1D and 2D), so the first size that fits is the smallest.
    """
    def fits(n: int) -> bool:
        return worst_share(cfg.clipping(n_exc=n, scale=auto_scale(n, cfg.dim))) <= MAX_CLIPPED_SHARE

    sizes = grid_sizes(cfg.inh_ratio, cfg.dim, cfg.n_exc + 1, N_SEARCH_MAX)
    if not sizes or not fits(sizes[-1]):
        return None
    lo, hi = 0, len(sizes) - 1  # invariant: sizes[hi] fits
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(sizes[mid]):
            hi = mid
        else:
            lo = mid + 1
    return sizes[hi]


def largest_fitting(fits: Callable[[float], bool], high: float, steps: int = 40) -> float:
    """Return (by bisection on (0, high]) the largest x with fits(x), to a relative 2^−steps;
    fits must be monotone (true below some value) and true near 0."""
    lo, hi = 0.0, high
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def clipping_message(cfg: Config, clip: dict[str, tuple[float, float]]) -> str:
    """Return the refusal of the clipping rule: the worst block's peak p and share s, the bound,
    and what fits (the smallest task.n_exc, or the largest task.range_scale, and task.density)."""
    names = {"ee": "E←E", "ie": "I←E", "ei": "E←I", "ii": "I←I"}
    worst = max(clip, key=lambda p: clip[p][1])
    peak, share = clip[worst]

    def ok(scale: float | None = None, density: float | None = None) -> bool:
        return worst_share(cfg.clipping(scale=scale, density=density)) <= MAX_CLIPPED_SHARE

    density_max = largest_fitting(lambda a: ok(density=a), cfg.density)
    head = (f"{'preset ' + str(cfg.preset) if cfg.preset else 'these parameters'} at "
            f"task.n_exc={cfg.n_exc} (dim {cfg.dim}, ranges ×{cfg.scale:.4g}): the connection "
            f"probability of block {worst} ({names[worst]}, d = {cfg.ranges()[worst]:.4g}) "
            f"peaks at {peak:.4f} > 1, and clipping it at 1 would remove {share:.3%} of the "
            f"expected in-degree K_{worst} that the theory assumes (allowed: at most "
            f"{MAX_CLIPPED_SHARE:.1%} in every block)")
    if cfg.range_scale is not None:
        scale_max = largest_fitting(lambda sc: ok(scale=sc), cfg.scale)
        fix = (f"task.range_scale={cfg.range_scale} is explicit, so task.n_exc does not change "
               f"the ranges; allowed: task.range_scale <= {scale_max:.4g}")
    else:
        n_fit = smallest_fitting_n_exc(cfg)
        fix = (f"allowed: task.n_exc >= {n_fit} (the smallest grid size that fits, "
               f"ranges ×{auto_scale(n_fit, cfg.dim):.4g})" if n_fit is not None else
               f"no task.n_exc <= {N_SEARCH_MAX} fits with the automatic range scale")
    return (f"{head}; {fix}, or task.density <= {density_max:.4g}, or shorter ranges "
            f"(task.range_{worst} is the worst block)")
