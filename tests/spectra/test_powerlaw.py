import math

import pytest
import torch

from callbacks.spectra import powerlaw_fit


def pareto(n: int, alpha: float, xmin: float, gen: torch.Generator) -> torch.Tensor:
    """Samples of p(x) ∝ x^(−alpha) on [xmin, ∞) by inversion."""
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return xmin * (1 - u) ** (-1.0 / (alpha - 1.0))


def reference_fit(x: torch.Tensor, min_tail: int = 2):
    """Plain-loop CSN fit over every candidate xmin (independent of the vectorised code)."""
    xs = sorted(float(v) for v in x if v > 0)
    n_all = len(xs)
    best = None
    for i in range(n_all - min_tail + 1):
        tail = xs[i:]
        n = len(tail)
        s = sum(math.log(t / xs[i]) for t in tail)
        if s <= 0:
            continue
        a = 1 + n / s
        d = max(abs(1 - (t / xs[i]) ** (1 - a) - j / n) for j, t in enumerate(tail))
        if best is None or d < best[2]:
            best = (a, xs[i], d, n)
    return best


def reference_small_fit(x: torch.Tensor, k_min: int = 8, objective: str = "J"):
    """Plain-loop small-sample rule of WeightWatcher's ``fit_powerlaw_smallN``: tails of at
    least k_min values, alpha = 1 + (n - 1)/S, xmin minimising J = D - 0.868/sqrt(n)
    (``objective="D"``: minimising D alone). Returns (alpha, xmin, D, n)."""
    xs = sorted(float(v) for v in x if v > 1e-5)
    best, best_obj = None, math.inf
    for i in range(len(xs) - 1):
        tail = xs[i:]
        n = len(tail)
        s = sum(math.log(t / xs[i]) for t in tail)
        if n < k_min or s <= 1e-12 or 1 + (n - 1) / s <= 1:
            continue
        a = 1 + (n - 1) / s
        d = max(abs(1 - (t / xs[i]) ** (1 - a) - j / n) for j, t in enumerate(tail))
        obj = d - 0.868 / math.sqrt(n) if objective == "J" else d
        if obj < best_obj:
            best, best_obj = (a, xs[i], d, n), obj
    return best


def test_planted_power_law_alpha(gen):
    x = pareto(3000, 2.5, 1.0, gen)
    fit = powerlaw_fit(x)
    assert abs(fit.alpha - 2.5) < 0.15
    assert fit.ks_distance < 0.05
    # sigma is the standard error (alpha - 1)/sqrt(n) of the true exponent 2.5 (to ~10%)
    assert fit.sigma == pytest.approx(1.5 / math.sqrt(fit.n_tail), rel=0.1)


def test_sigma_is_the_spread_of_alpha_over_samples(gen):
    """The reported sigma equals the standard deviation of alpha over independent samples."""
    fits = [powerlaw_fit(pareto(400, 2.5, 1.0, gen), xmin=1.0) for _ in range(300)]
    alphas = torch.tensor([f.alpha for f in fits], dtype=torch.float64)
    mean_sigma = sum(f.sigma for f in fits) / len(fits)
    assert float(alphas.std()) == pytest.approx(mean_sigma, rel=0.15)


def test_small_sample_alpha_is_the_n_minus_1_estimator():
    """Eight values (one candidate xmin: the smallest): alpha = 1 + 7/S, S = sum log(x/x_min).

    Clauset et al. (2009, eq. 3.7 and appendix B): for a known xmin the MLE 1 + n/S is biased,
    E = 1 + n(alpha - 1)/(n - 1), and 1 + (n - 1)/S is unbiased. Here xmin is the smallest of
    the n values, so S sums n - 1 exponential(alpha - 1) terms (S ~ Gamma(n - 1)) and
    E[1 + (n - 1)/S] = 1 + (n - 1)(alpha - 1)/(n - 2): 2.75 for alpha = 2.5, n = 8, against
    1 + n(alpha - 1)/(n - 2) = 3.0 without the small-sample term.
    """
    g = torch.Generator().manual_seed(5)
    x = pareto(8, 2.5, 1.0, g)
    s = float(torch.log(x / x.min()).sum())
    fit = powerlaw_fit(x)
    assert fit.alpha == pytest.approx(1 + 7 / s, rel=1e-12)
    assert fit.n_tail == 8 and fit.xmin == float(x.min())
    alphas = torch.tensor([powerlaw_fit(pareto(8, 2.5, 1.0, g)).alpha for _ in range(600)],
                          dtype=torch.float64)
    se = float(alphas.std()) / math.sqrt(alphas.numel())
    assert abs(float(alphas.mean()) - 2.75) < 3.5 * se < 0.12


@pytest.mark.parametrize(("seed", "term_matters"), [(2, True), (5, True), (6, True), (14, False)])
def test_small_sample_rule_matches_its_loop_reference(seed, term_matters):
    """16 eigenvalues of a heavy-tailed 100x16 matrix: WeightWatcher's small-sample rule (for
    seeds 2, 5, 6 the -0.868/sqrt(n) term moves xmin: minimising D alone gives another tail)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(100, 16, generator=g, dtype=torch.float64)
    chi = torch.randn(3, 100, 16, generator=g, dtype=torch.float64).square().sum(0) / 3
    x = torch.linalg.svdvals(z / chi.sqrt()).square()
    fit = powerlaw_fit(x)
    a, xmin, d, n = reference_small_fit(x)
    assert fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9)
    assert fit.n_tail == n
    assert fit.sigma == pytest.approx((a - 1) / math.sqrt(n), rel=1e-10)
    assert (reference_small_fit(x, objective="D")[3] != n) == term_matters


def test_xmin_found_after_non_power_law_body(gen):
    body = 0.05 + 0.9 * torch.rand(2000, generator=gen, dtype=torch.float64)  # uniform [0.05, 0.95]
    tail = pareto(1500, 2.5, 1.0, gen)
    fit = powerlaw_fit(torch.cat([body, tail]))
    assert 0.9 <= fit.xmin <= 1.6
    assert abs(fit.alpha - 2.5) < 0.15
    # fitting everything from the smallest value gives a very different (wrong) exponent
    forced = powerlaw_fit(torch.cat([body, tail]), xmin=0.05)
    assert abs(forced.alpha - 2.5) > 0.5


@pytest.mark.parametrize("kind", ["body_and_tail", "wishart", "student_t"])
def test_matches_loop_reference(kind, gen):
    if kind == "body_and_tail":
        x = torch.cat([torch.rand(150, generator=gen, dtype=torch.float64),
                       pareto(80, 3.0, 1.0, gen)])
    else:  # 400 ESD values: _ks_rows works in row blocks over partial column ranges
        z = torch.randn(400, 400, generator=gen, dtype=torch.float64)
        if kind == "student_t":
            z = z / torch.sqrt(torch.randn(3, 400, 400, generator=gen, dtype=torch.float64)
                               .square().sum(0) / 3)
        x = torch.linalg.eigvalsh(z.T @ z / 400)
    fit = powerlaw_fit(x)
    a, xmin, d, n = reference_fit(x)
    assert fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.xmin == pytest.approx(xmin, rel=1e-12)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9)
    assert fit.n_tail == n


def test_fixed_xmin_is_the_closed_form(gen):
    x = pareto(500, 3.0, 2.0, gen)
    fit = powerlaw_fit(x, xmin=2.0)
    expected = 1 + x.numel() / torch.log(x / 2.0).sum().item()
    assert fit.alpha == pytest.approx(expected, rel=1e-12)
    assert fit.n_tail == 500


def test_no_upper_cap_on_alpha():
    x = 1.0 + torch.linspace(0, 1e-3, 200, dtype=torch.float64)  # an extremely steep 'tail'
    fit = powerlaw_fit(x, xmin=1.0)
    assert fit.alpha > 1000


def test_min_tail_respected(gen):
    x = torch.cat([torch.rand(150, generator=gen, dtype=torch.float64),
                   pareto(80, 3.0, 1.0, gen)])
    free = powerlaw_fit(x)
    fit = powerlaw_fit(x, min_tail=150)
    assert free.n_tail < 150  # the constraint binds
    a, xmin, d, n = reference_fit(x, min_tail=150)
    assert (fit.n_tail, fit.xmin) == (n, xmin)
    assert fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9)


def test_small_sample_rule_and_degenerate():
    x = torch.tensor(
        [1.0, 1.5, 2.0, 3.0, 4.5, 7.0, 11.0, 20.0, 35.0, 60.0, 110.0, 200.0], dtype=torch.float64
    )
    fit = powerlaw_fit(x)  # fewer than 20 values: tails of >= 8 points
    a, xmin, d, n = reference_small_fit(x)
    assert (fit.n_tail, fit.xmin) == (n, xmin)
    assert fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.ks_distance == pytest.approx(d, rel=1e-9)
    assert math.isnan(powerlaw_fit(torch.tensor([1.0])).alpha)
    assert math.isnan(powerlaw_fit(torch.tensor([-1.0, 0.0, 2.0])).alpha)  # one positive value


def test_bad_xmin_rejected():
    with pytest.raises(ValueError, match="allowed values"):
        powerlaw_fit(torch.rand(10) + 1, xmin="auto")
    with pytest.raises(ValueError):
        powerlaw_fit(torch.rand(10) + 1, xmin=-1.0)


def test_small_sample_rule_starts_below_20_values():
    """19 positive values: the small-sample rule; 20: the standard fit (WeightWatcher's
    SMALL_N_CUTOFF = 20); fewer than 8: the small-sample fit over tails of >= 2 values."""
    g = torch.Generator().manual_seed(3)
    for size, reference in [(19, reference_small_fit), (20, reference_fit),
                            (5, lambda x: reference_small_fit(x, k_min=2)),
                            (3, lambda x: reference_small_fit(x, k_min=2))]:
        x = pareto(size, 2.5, 1.0, g)
        fit = powerlaw_fit(x)
        a, xmin, d, n = reference(x)
        assert (fit.n_tail, fit.xmin) == (n, xmin), size
        assert fit.alpha == pytest.approx(a, rel=1e-10), size
        assert fit.ks_distance == pytest.approx(d, rel=1e-9), size
    x = pareto(19, 2.5, 1.0, g)
    assert powerlaw_fit(x, small_n=10)[:2] == pytest.approx(reference_fit(x)[:2], rel=1e-10)


def test_fixed_xmin_includes_the_value_at_xmin():
    """x = (1, 2, 3, 4), xmin = 2: the tail is (2, 3, 4), alpha = 1 + 3/log(3·4/2²), and D the
    largest gap between 1 − (x/2)^(1−alpha) and the CDF's left limits (0, 1/3, 2/3)."""
    x = torch.tensor([4.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    fit = powerlaw_fit(x, xmin=2.0)
    alpha = 1 + 3 / math.log(3.0)
    d = max(abs(1 - (v / 2) ** (1 - alpha) - j / 3) for j, v in enumerate([2.0, 3.0, 4.0]))
    assert fit == pytest.approx((alpha, 2.0, d, 3, (alpha - 1) / math.sqrt(3)), rel=1e-12)
    for bad in (3.5, 4.0, 5.0):  # one value or none at or above xmin
        assert math.isnan(powerlaw_fit(x, xmin=bad).alpha)
    same = powerlaw_fit(torch.full((5,), 2.0, dtype=torch.float64), xmin=2.0)
    assert math.isnan(same.alpha) and same.n_tail == 0  # log(x/xmin) sums to 0


def test_threshold_drops_small_values(gen):
    x = torch.cat([torch.rand(100, generator=gen, dtype=torch.float64),
                   pareto(60, 3.0, 1.0, gen)])
    assert powerlaw_fit(x, threshold=0.5) == powerlaw_fit(x[x > 0.5])
    assert powerlaw_fit(x, threshold=-1.0) == powerlaw_fit(x[x > 0])  # never below 0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"^spec: powerlaw_fit needs real values"):
        powerlaw_fit(torch.tensor([1 + 1j, 2.0]), name="spec")
    with pytest.raises(ValueError, match=r"^min_tail must be >= 2, got 1"):
        powerlaw_fit(torch.rand(10) + 1, min_tail=1)
    with pytest.raises(ValueError, match=r"^xmin must be 'ks' or a positive float, got 0.0"):
        powerlaw_fit(torch.rand(10) + 1, xmin=0.0)
    with pytest.raises(ValueError, match=r"^evals has non-finite"):
        powerlaw_fit(torch.tensor([1.0, float("inf")]))


def test_smallest_inputs_have_closed_forms():
    """Two values: one candidate, alpha = 1 + (2 − 1)/log(x2/x1) (the small-sample estimator);
    a fixed xmin with two values at or above it: alpha = 1 + 2/Σ log(x/xmin)."""
    two = powerlaw_fit(torch.tensor([2.0, 1.0], dtype=torch.float64))
    assert (two.alpha, two.xmin, two.n_tail) == (pytest.approx(1 + 1 / math.log(2)), 1.0, 2)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    fixed = powerlaw_fit(x, xmin=3.0)
    assert (fixed.alpha, fixed.n_tail) == (pytest.approx(1 + 2 / math.log(4 / 3)), 2)


def test_fit_is_float64_and_ignores_zeros(gen):
    x = torch.cat([torch.rand(100, generator=gen, dtype=torch.float64),
                   pareto(60, 3.0, 1.0, gen)])
    x32 = x.float()
    assert powerlaw_fit(x32) == powerlaw_fit(x32.double())  # float32 input computed in float64
    with_zeros = torch.cat([torch.zeros(7, dtype=torch.float64), x])
    assert powerlaw_fit(with_zeros) == powerlaw_fit(x)
    few = x[-15:]  # 15 positive values and 7 zeros: still the small-sample rule
    assert powerlaw_fit(torch.cat([torch.zeros(7, dtype=torch.float64), few])) == powerlaw_fit(few)
    with pytest.raises(ValueError, match=r"^spec has non-finite"):
        powerlaw_fit(torch.tensor([1.0, float("nan")]), name="spec")


def test_large_esd_in_row_blocks_matches_the_fixed_xmin_closed_form(gen):
    """4500 values: the KS matrix is built in blocks of 4 Mi entries (932 rows). At the chosen
    xmin the exponent and D are those of the fixed-xmin closed form."""
    x = pareto(4500, 2.5, 1.0, gen)
    fit = powerlaw_fit(x)
    assert abs(fit.alpha - 2.5) < 0.1
    fixed = powerlaw_fit(x, xmin=fit.xmin)
    assert (fit.alpha, fit.ks_distance, fit.n_tail) == pytest.approx(
        (fixed.alpha, fixed.ks_distance, fixed.n_tail), rel=1e-10)


def test_steep_tails_with_small_log_sums_are_fitted(gen):
    """alpha = 101: every tail has Σ log(x/xmin) < 1; the fit still finds alpha ≈ 101."""
    x = pareto(60, 101.0, 1.0, gen)
    assert float(torch.log(x / x.min()).sum()) < 1
    a, xmin, d, n = reference_fit(x)
    fit = powerlaw_fit(x)
    assert (fit.n_tail, fit.xmin) == (n, xmin) and fit.alpha == pytest.approx(a, rel=1e-10)
    assert 50 < fit.alpha < 200


def test_small_sample_rule_skips_degenerate_tails():
    """12 values whose top 8 agree to 1e-15: the tail of those 8 has Σ log(x/xmin) ≤ 1e-12 and
    is skipped, as in WeightWatcher (its alpha would be ~1e13)."""
    top = 5.0 * (1 + 1e-16 * torch.arange(8, dtype=torch.float64))
    x = torch.cat([torch.tensor([1.0, 1.5, 2.2, 3.1], dtype=torch.float64), top])
    a, xmin, d, n = reference_small_fit(x)
    fit = powerlaw_fit(x)
    assert (fit.n_tail, fit.xmin) == (n, xmin) and fit.alpha == pytest.approx(a, rel=1e-10)
    assert fit.alpha < 100


def test_batched_fits_equal_the_row_by_row_fits(gen):
    """One (B, n) batch whose rows drop different numbers of values at the threshold (none, 30,
    all but 15: the small-sample rule, all but one: no fit), unsorted: every row's fit equals
    powerlaw_fit of that row alone, and the large row agrees with the plain-loop reference."""
    from callbacks.spectra import powerlaw_fits

    n = 80
    rows = [pareto(n, 2.5, 1.0, gen),
            torch.cat([torch.rand(30, generator=gen, dtype=torch.float64) * 1e-6,
                       pareto(n - 30, 3.5, 2.0, gen)]),
            torch.cat([torch.zeros(n - 15, dtype=torch.float64), pareto(15, 2.0, 1.0, gen)]),
            torch.cat([torch.zeros(n - 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)])]
    batch = torch.stack([r[torch.randperm(n, generator=gen)] for r in rows])
    fits = powerlaw_fits(batch, threshold=1e-5)
    assert fits[:3] == [powerlaw_fit(r, threshold=1e-5) for r in rows[:3]]
    assert math.isnan(fits[3].alpha) and fits[3].n_tail == 0
    assert fits[2].n_tail >= 8  # the small-sample rule's tails of at least 8 values
    a, xmin, d, nt = reference_fit(rows[1][rows[1] > 1e-5])
    assert (fits[1].alpha, fits[1].xmin, fits[1].n_tail) == (pytest.approx(a, rel=1e-12), xmin, nt)
    assert fits[1].ks_distance == pytest.approx(d, rel=1e-10)
    with pytest.raises(ValueError, match=r"^spec must be a non-empty \(B, n\) batch"):
        powerlaw_fits(torch.ones(5), name="spec")
    with pytest.raises(ValueError, match=r"^spec has non-finite"):
        powerlaw_fits(torch.tensor([[1.0, float("nan")]]), name="spec")


def test_fixed_xmin_counts_only_values_above_the_threshold():
    """A fixed xmin below the threshold: the values in (xmin, threshold] are dropped first;
    values in (0, 1] stay when the threshold is 0; two values are enough for a fit."""
    x = torch.tensor([0.0, 2e-6, 5e-6, 1e-5, 0.6, 0.8, 2.0, 4.0], dtype=torch.float64)
    fit = powerlaw_fit(x, xmin=1e-6, threshold=1e-5)
    tail = [0.6, 0.8, 2.0, 4.0]
    alpha = 1.0 + 4 / sum(math.log(v / 1e-6) for v in tail)
    assert (fit.n_tail, fit.xmin) == (4, 1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-12)
    assert powerlaw_fit(x, xmin=0.7).n_tail == 3  # 0.8, 2, 4: nothing in (0, 1] dropped
    two = powerlaw_fit(torch.tensor([1.0, 3.0]), xmin=1.0)
    assert (two.n_tail, two.alpha) == (2, pytest.approx(1.0 + 2.0 / math.log(3.0), rel=1e-12))


def test_batched_fits_defaults_dtype_and_messages(gen):
    """powerlaw_fits' defaults equal powerlaw_fit's (a row of exactly 20 values > 0: the
    small-sample boundary; values below 1 kept at threshold 0); float32 rows are fitted in
    float64; each refusal names the input."""
    from callbacks.spectra import powerlaw_fits

    rows = torch.stack([pareto(20, 2.5, 0.05, gen), pareto(20, 3.0, 0.2, gen)])
    assert bool((rows < 1).any())
    assert powerlaw_fits(rows) == [powerlaw_fit(r) for r in rows]
    r32 = rows.float()
    assert powerlaw_fits(r32) == powerlaw_fits(r32.double())
    no_fit = torch.zeros(20, dtype=torch.float64)
    no_fit[-1] = 1.0  # one value > 0: no fit, and the rows after it are still fitted
    after = powerlaw_fits(torch.stack([no_fit, rows[0]]))
    assert len(after) == 2 and math.isnan(after[0].alpha) and after[1] == powerlaw_fit(rows[0])
    with pytest.raises(ValueError, match=r"^spec must be a non-empty \(B, n\) batch, got shape \(0, 5\)"):
        powerlaw_fits(torch.empty(0, 5), name="spec")
    with pytest.raises(ValueError, match=r"^spec: needs real values, got complex$"):
        powerlaw_fits(torch.ones(2, 3, dtype=torch.complex128), name="spec")
    with pytest.raises(TypeError, match=r"^spec: expected a tensor-like object"):
        powerlaw_fits([[1.0, "a"]], name="spec")
    with pytest.raises(TypeError, match=r"^evals: expected a tensor-like object"):
        powerlaw_fits([[1.0, "a"]])
