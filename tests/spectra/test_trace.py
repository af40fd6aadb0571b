import math

import pytest
import torch

from callbacks.spectra import hutchinson_trace, hutchpp_trace, slq_density, slq_quadrature

from .helpers import sym_with_spectrum


def test_hutchinson_unbiased(gen):
    d = torch.rand(150, generator=gen, dtype=torch.float64) * 2 - 0.5
    A = sym_with_spectrum(d, gen)
    true = float(d.sum())
    ests = [hutchinson_trace(lambda v: A @ v, 150, 10, seed=s).trace for s in range(200)]
    mean = sum(ests) / len(ests)
    sd = (sum((e - mean) ** 2 for e in ests) / (len(ests) - 1)) ** 0.5
    assert abs(mean - true) < 4 * sd / math.sqrt(len(ests))
    # Rademacher probes: Var(zᵀAz) = 2(‖A‖_F² − Σ A_ii²), so sd of a 10-probe mean is known
    exact_sd = math.sqrt(2 * (float(A.square().sum()) - float(A.diagonal().square().sum())) / 10)
    assert sd == pytest.approx(exact_sd, rel=0.15)
    errors = [hutchinson_trace(lambda v: A @ v, 150, 10, seed=s).std_error for s in range(50)]
    assert sum(errors) / len(errors) == pytest.approx(exact_sd, rel=0.15)  # the reported SE
    single = hutchinson_trace(lambda v: A @ v, 150, 10, seed=0)
    assert single.n_matvecs == 10


def test_hutchpp_exact_on_low_rank_and_better_than_hutchinson(gen):
    d = torch.zeros(200, dtype=torch.float64)
    d[:5] = torch.tensor([50.0, 30.0, 20.0, 10.0, 5.0])
    A = sym_with_spectrum(d, gen)
    est = hutchpp_trace(lambda v: A @ v, 200, 18, seed=0)  # 6 sketch columns >= rank 5
    assert est.trace == pytest.approx(115.0, rel=1e-10)
    assert est.n_matvecs == 18
    # decaying spectrum: Hutch++ error much smaller than Hutchinson's at equal cost
    dd = 1.0 / torch.arange(1, 201, dtype=torch.float64) ** 2
    B = sym_with_spectrum(dd, gen)
    true = float(dd.sum())
    err_h = [
        abs(hutchinson_trace(lambda v: B @ v, 200, 30, seed=s).trace - true) for s in range(30)
    ]
    err_pp = [abs(hutchpp_trace(lambda v: B @ v, 200, 30, seed=s).trace - true) for s in range(30)]
    assert sum(err_pp) < 0.5 * sum(err_h)
    ests = [hutchpp_trace(lambda v: B @ v, 200, 30, seed=s).trace for s in range(30)]
    assert abs(sum(ests) / 30 - true) < 0.01 * true


def test_slq_density_integrates_to_one_and_peaks_at_clusters(gen):
    d = torch.cat(
        [
            1.0 + 0.05 * torch.randn(150, generator=gen, dtype=torch.float64),
            5.0 + 0.05 * torch.randn(100, generator=gen, dtype=torch.float64),
        ]
    )
    A = sym_with_spectrum(d, gen)
    grid, dens = slq_density(lambda v: A @ v, 250, n_probes=10, n_steps=40, sigma=0.1, seed=0)
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=1e-3)
    peaks = [
        i
        for i in range(1, len(dens) - 1)
        if dens[i] > dens[i - 1] and dens[i] >= dens[i + 1] and dens[i] > 0.1 * dens.max()
    ]
    locs = sorted(float(grid[i]) for i in peaks)
    assert len(locs) == 2
    assert locs[0] == pytest.approx(1.0, abs=0.1) and locs[1] == pytest.approx(5.0, abs=0.1)
    mass_low = torch.trapezoid(dens[grid < 3], grid[grid < 3]).item()
    assert mass_low == pytest.approx(150 / 250, abs=0.06)


def test_slq_quadrature_is_exact_for_polynomials_of_degree_below_2m(gen):
    """Gauss quadrature with m nodes integrates θ^k exactly for k ≤ 2m − 1: on a diagonal A
    each Rademacher probe has zᵀA^k z/dim = mean(d^k), so every probe gives the moments."""
    d = 0.5 + torch.rand(120, generator=gen, dtype=torch.float64)
    m = 6
    q = slq_quadrature(lambda v: d * v, 120, n_probes=3, n_steps=m, seed=0)
    assert q.nodes.shape == (3, m) and q.n_matvecs == 3 * m
    for k in range(2 * m):
        moments = (q.weights * q.nodes**k).sum(1)
        torch.testing.assert_close(moments, torch.full((3,), float((d**k).mean()),
                                                       dtype=torch.float64), rtol=1e-9, atol=0)
    assert not torch.allclose((q.weights * q.nodes ** (4 * m)).sum(1),
                              torch.full((3,), float((d ** (4 * m)).mean()),
                                         dtype=torch.float64), rtol=1e-6)


def test_slq_quadrature_moments(gen):
    d = torch.rand(120, generator=gen, dtype=torch.float64)
    A = sym_with_spectrum(d, gen)
    q = slq_quadrature(lambda v: A @ v, 120, n_probes=20, n_steps=30, seed=0)
    torch.testing.assert_close(q.weights.sum(1), torch.ones(20, dtype=torch.float64))
    m2 = (q.weights * q.nodes**2).sum(1).mean().item()
    assert m2 == pytest.approx(float((d**2).mean()), rel=0.05)


def test_slq_on_a_tiny_operator_stops_at_invariant_subspace():
    A = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    q = slq_quadrature(lambda v: A @ v, 3, n_probes=2, n_steps=10, seed=0)
    assert q.nodes.shape == (2, 3) and q.n_matvecs == 6  # stopped after 3 steps per probe
    # the Krylov space is everything: nodes are the eigenvalues, weights z_i²/3 = 1/3
    torch.testing.assert_close(q.nodes, torch.tensor([[1.0, 2.0, 3.0]] * 2, dtype=torch.float64))
    torch.testing.assert_close(q.weights, torch.full((2, 3), 1 / 3, dtype=torch.float64))


# ----------------------------------------------------------------------------- added for the
# mutation run of 2026-12-02 (each kills survivors of scripts/mutation.py trace)
def _swap(v: torch.Tensor) -> torch.Tensor:
    """A = [[0, 1], [1, 0]]: zᵀAz = 2 z₁z₂ = ±2 for a Rademacher z, tr A = 0."""
    return v.flip(0)


def test_std_error_by_hand_and_calibrated():
    """Two probes of A = [[0, 1], [1, 0]] give values ±2 each: the estimate is 0 exactly when
    they differ, and then the standard error s/√2 is 2 (s = 2√2); else both agree and it is 0.
    One probe (Hutchinson) or one residual probe (Hutch++ with 3 matvecs) reports 0. Hutch++'s
    reported error matches the spread of its estimates over seeds."""
    seen = set()
    for s in range(12):
        est = hutchinson_trace(_swap, 2, 2, seed=s)
        assert est.std_error == pytest.approx(2.0 if est.trace == 0 else 0.0, abs=1e-12)
        seen.add(est.trace)
    assert seen == {-2.0, 0.0, 2.0}
    assert hutchinson_trace(_swap, 2, 1, seed=0).std_error == 0.0
    one = hutchinson_trace(lambda v: 2.0 * v, 1, 1)  # dim 1, one sample: valid, exact
    assert (one.trace, one.std_error, one.n_matvecs) == (2.0, 0.0, 1)
    d = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    three = hutchpp_trace(lambda v: d * v, 4, 3, seed=0)  # s = 1, g = 1
    assert three.std_error == 0.0 and three.n_matvecs == 3
    gen = torch.Generator()
    gen.manual_seed(1234)
    dd = 1.0 / torch.arange(1, 101, dtype=torch.float64)
    B = sym_with_spectrum(dd, gen)
    ests = [hutchpp_trace(lambda v: B @ v, 100, 30, seed=s) for s in range(40)]  # g = 10
    spread = float(torch.tensor([e.trace for e in ests]).std())
    assert sum(e.std_error for e in ests) / 40 == pytest.approx(spread, rel=0.3)
    assert hutchpp_trace(lambda v: B @ v, 100, 6, seed=0).std_error > 0  # g = 2


def test_hutchpp_with_four_matvecs_splits_them_one_sketch_two_probes(gen):
    """m = 4: ⌈4/3⌉ = 2 sketch columns would leave no probe, so s = 1, g = 2 (4 matvecs).
    On a rank-one A the one-column sketch spans its range: the estimate is exact."""
    d = torch.zeros(50, dtype=torch.float64)
    d[0] = 5.0
    A = sym_with_spectrum(d, gen)
    for m in (3, 4):
        est = hutchpp_trace(lambda v: A @ v, 50, m, seed=1)
        assert est.n_matvecs == m and est.trace == pytest.approx(5.0, rel=1e-10)
        assert est.std_error == pytest.approx(0.0, abs=1e-10)


def test_slq_stops_at_an_invariant_subspace_at_any_scale():
    """diag(1, 1, 2, 2, 3, 3)·c: a Rademacher start vector has a 3-dimensional Krylov space,
    so Lanczos stops after 3 steps (3 matvecs per probe) with nodes c·(1, 2, 3) and weights
    2/6 each; the 3 padding nodes repeat the largest with weight 0. The stopping rule is
    relative, so c = 1e-13 and 1e6 stop at the same step. Two distinct values: 2 steps."""
    base = torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0], dtype=torch.float64)
    for c in (1.0, 1e-13, 1e6):
        q = slq_quadrature(lambda v, c=c: c * base * v, 6, n_probes=2, n_steps=6, seed=0)
        assert q.n_matvecs == 6
        torch.testing.assert_close(q.nodes / c, torch.tensor([[1.0, 2.0, 3.0, 3.0, 3.0, 3.0]] * 2,
                                                             dtype=torch.float64))
        torch.testing.assert_close(q.weights, torch.tensor([[1 / 3] * 3 + [0.0] * 3] * 2,
                                                           dtype=torch.float64))
    two = torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)
    q = slq_quadrature(lambda v: two * v, 4, n_probes=1, n_steps=4, seed=0)
    assert q.n_matvecs == 2
    torch.testing.assert_close(q.nodes, torch.tensor([[1.0, 4.0, 4.0, 4.0]], dtype=torch.float64))
    torch.testing.assert_close(q.weights, torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64))
    # one step: the single node is zᵀAz/dim = mean(d) for a diagonal A (z_i² = 1)
    one = slq_quadrature(lambda v: base * v, 6, n_probes=2, n_steps=1, seed=0)
    assert one.nodes.shape == (2, 1) and one.n_matvecs == 2
    torch.testing.assert_close(one.nodes, torch.full((2, 1), 2.0, dtype=torch.float64))


def test_slq_density_default_sigma_grid_and_dtype():
    """diag(1, 2, 3): exact nodes 1, 2, 3 with weight 1/3. Default σ = 1% of the range = 0.02,
    grid = 1024 points over [1 − 5σ, 3 + 5σ], float64 (also for a float32 grid given); the
    density at 2 is (1/3)·N(0; 0, σ²). A one-point spectrum 0.5·I has σ = 1e-14 (relative
    floor: 1% of 1e-12·max(|0.5|, 1)). The defaults are 8 probes and 64 steps."""
    d = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    grid, dens = slq_density(lambda v: d * v, 3, n_probes=2, n_steps=3, seed=0)
    assert grid.dtype == torch.float64 and grid.numel() == 1024
    assert float(grid[0]) == pytest.approx(0.9) and float(grid[-1]) == pytest.approx(3.1)
    at2 = slq_density(lambda v: d * v, 3, n_probes=2, n_steps=3, seed=0,
                      grid=torch.tensor([2.0], dtype=torch.float32))
    assert at2[0].dtype == torch.float64
    assert float(at2[1][0]) == pytest.approx(1 / (3 * 0.02 * math.sqrt(2 * math.pi)), rel=1e-9)
    for level, sigma in ((0.5, 1e-14), (3.0, 3e-14)):  # the floor is relative above |θ| = 1
        flat = slq_density(lambda v, c=level: c * v, 4, n_probes=1, n_steps=2, seed=0,
                           grid=torch.tensor([level], dtype=torch.float64))[1]
        assert float(flat[0]) == pytest.approx(1 / (sigma * math.sqrt(2 * math.pi)), rel=1e-6)
    dd = torch.linspace(0.1, 2.0, 100, dtype=torch.float64)
    x = torch.linspace(0.0, 2.1, 50, dtype=torch.float64)
    default = slq_density(lambda v: dd * v, 100, grid=x, sigma=0.1, seed=3)[1]
    explicit = slq_density(lambda v: dd * v, 100, n_probes=8, n_steps=64, grid=x, sigma=0.1,
                           seed=3)[1]
    assert torch.equal(default, explicit)
    other = slq_density(lambda v: dd * v, 100, n_probes=8, n_steps=65, grid=x, sigma=0.1,
                        seed=3)[1]
    assert not torch.equal(default, other)


def test_seed_and_generator_choose_the_probes():
    """seed=s and a generator seeded with s draw the same probes; another seed draws others."""
    d = torch.linspace(0.5, 3.0, 40, dtype=torch.float64)
    A = sym_with_spectrum(d, torch.Generator().manual_seed(7))
    calls = {
        "hutchinson": lambda **kw: hutchinson_trace(lambda v: A @ v, 40, 5, **kw).trace,
        "hutchpp": lambda **kw: hutchpp_trace(lambda v: A @ v, 40, 9, **kw).trace,
        "slq_quadrature": lambda **kw: slq_quadrature(lambda v: A @ v, 40, 2, 4, **kw).nodes,
        "slq_density": lambda **kw: slq_density(lambda v: A @ v, 40, 2, 4, sigma=0.1,
                                                n_grid=16, **kw)[1],
    }
    for name, call in calls.items():
        five = torch.as_tensor(call(seed=5))
        assert torch.equal(torch.as_tensor(call(generator=torch.Generator().manual_seed(5))),
                           five), name
        assert not torch.equal(torch.as_tensor(call(seed=6)), five), name


def test_bad_input_names_the_estimator_and_the_operator():
    """dim/sample counts < 1, n_matvecs < 3, a matvec of the wrong size, type or with NaN, and
    σ ≤ 0 raise ValueError naming the function and the operator."""
    ok = lambda v: 2.0 * v  # noqa: E731
    estimators = {
        "hutchinson_trace": lambda mv, dim, n, **kw: hutchinson_trace(mv, dim, n, **kw),
        "hutchpp_trace": lambda mv, dim, n, **kw: hutchpp_trace(mv, dim, n + 2, **kw),
        "slq_quadrature": lambda mv, dim, n, **kw: slq_quadrature(mv, dim, n, 3, **kw),
    }
    for fn, call in estimators.items():
        with pytest.raises(ValueError, match=rf"^{fn} needs dim >= 1 and a positive"):
            call(ok, 0, 1)
        if fn != "hutchpp_trace":
            with pytest.raises(ValueError, match=rf"^{fn} needs dim >= 1 .* got 5, 0$"):
                call(ok, 5, 0)
        for bad in (lambda v: v[:-1], lambda v: v.tolist()):
            with pytest.raises(ValueError, match=r"^operator: matvec must return a tensor of 5 "):
                call(bad, 5, 1)
        with pytest.raises(ValueError, match=r"^A: matvec must return"):
            call(lambda v: v[:-1], 5, 1, name="A")
        with pytest.raises(ValueError, match=r"^operator matvec output has non-finite"):
            call(lambda v: v * float("nan"), 5, 1)
    with pytest.raises(ValueError, match=r"^hutchpp_trace needs n_matvecs >= 3, got 2$"):
        hutchpp_trace(ok, 5, 2)
    with pytest.raises(ValueError, match=r"^slq_quadrature needs dim >= 1"):
        slq_density(ok, 0)
    with pytest.raises(ValueError, match=r"^operator: matvec must return"):
        slq_density(lambda v: v[:-1], 5, n_probes=1, n_steps=2)
    with pytest.raises(ValueError, match=r"^A: matvec must return"):
        slq_density(lambda v: v[:-1], 5, n_probes=1, n_steps=2, name="A")
    # Hutch++ applies the operator to S, Q and G: each batch names the operator
    for good_calls in (2, 4):  # m = 6: s = 2 sketch columns, Q (2), then g = 2 probes
        calls = []

        def flaky(v, good=good_calls, calls=calls):
            calls.append(1)
            return 2.0 * v if len(calls) <= good else v[:-1]

        with pytest.raises(ValueError, match=r"^A: matvec must return"):
            hutchpp_trace(flaky, 5, 6, name="A")
    with pytest.raises(ValueError, match=r"^sigma must be > 0, got 0"):
        slq_density(ok, 5, n_probes=1, n_steps=2, sigma=0.0)
    with pytest.raises(ValueError, match=r"^grid has non-finite entries \(1 NaN"):
        slq_density(ok, 5, n_probes=1, n_steps=2, grid=torch.tensor([0.0, float("nan")]))


def test_a_float32_matvec_is_cast_to_the_probes_dtype():
    """The operator's output is cast to the float64 probes (Hutch++ multiplies it by Qᵀ, SLQ
    takes a dot product with the Lanczos vector: both need one dtype)."""
    d = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    est = hutchpp_trace(lambda v: (d * v).float(), 4, 12, seed=0)  # s = 4 = dim: exact
    assert est.trace == pytest.approx(10.0, rel=1e-6)
    q = slq_quadrature(lambda v: (d * v).float(), 4, 1, 4, seed=0)
    torch.testing.assert_close(q.nodes, d[None], rtol=1e-6, atol=0)
