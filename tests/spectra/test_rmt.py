import math

import pytest
import torch

from callbacks.spectra import (
    circular_law_radius,
    count_outliers,
    eigvals_general,
    eigvals_sym,
    mp_bulk_fit,
    mp_density,
    mp_edge,
    mp_edges,
)


def test_mp_edge_formula():
    assert mp_edge(400, 100, 2.0) == pytest.approx(2.0 * 1.5**2)
    lo, hi = mp_edges(400, 100, 2.0)
    assert lo == pytest.approx(2.0 * 0.5**2) and hi == pytest.approx(4.5)
    # symmetric in the aspect ratio for the non-zero part: q -> the same (1 ± sqrt q)^2 form
    assert mp_edge(100, 400) == pytest.approx(9.0)


def test_wishart_top_eigenvalue_at_mp_edge(gen):
    n, m, sigma2 = 400, 200, 0.7
    X = torch.randn(n, m, generator=gen, dtype=torch.float64) * math.sqrt(sigma2)
    ev = eigvals_sym(X.T @ X / n)
    lo, hi = mp_edges(n, m, sigma2)
    assert abs(ev[-1].item() / hi - 1) < 0.04
    assert ev[0].item() > 0.5 * lo
    # the bulk follows the MP density: compare the mass in a few bins
    edges = torch.linspace(lo, hi, 6, dtype=torch.float64)
    grid = torch.linspace(lo, hi, 20001, dtype=torch.float64)
    dens = mp_density(grid, m / n, sigma2)
    assert torch.trapezoid(dens, grid).item() == pytest.approx(1.0, abs=0.01)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        sel = (grid >= a) & (grid <= b)
        expected = torch.trapezoid(dens[sel], grid[sel]).item()
        observed = ((ev >= a) & (ev < b)).double().mean().item()
        assert abs(observed - expected) < 0.04


def test_spiked_covariance_outliers(gen):
    n, m = 400, 100
    spikes = torch.tensor([6.0, 9.0, 14.0], dtype=torch.float64)
    scale = torch.ones(m, dtype=torch.float64)
    scale[:3] = torch.sqrt(1 + spikes)
    X = torch.randn(n, m, generator=gen, dtype=torch.float64) * scale
    ev = eigvals_sym(X.T @ X / n)
    edge = mp_edge(n, m, 1.0)
    assert count_outliers(ev, 1.05 * edge) == 3
    sigma2, fit_edge, n_spikes = mp_bulk_fit(ev, n, m)
    assert n_spikes == 3
    assert sigma2 == pytest.approx(1.0, rel=0.05)
    assert fit_edge == pytest.approx(edge, rel=0.05)
    # no spikes in a white Wishart
    Z = torch.randn(n, m, generator=gen, dtype=torch.float64)
    ev0 = eigvals_sym(Z.T @ Z / n)
    assert count_outliers(ev0, 1.05 * edge) == 0


def test_ginibre_circular_law(gen):
    n, var = 400, 0.25
    A = torch.randn(n, n, generator=gen, dtype=torch.float64) * math.sqrt(var)
    ev = eigvals_general(A)
    r = circular_law_radius(n, var)
    assert r == pytest.approx(10.0)
    assert abs(ev.abs().max().item() / r - 1) < 0.05
    # uniform on the disc: a fraction ~ρ² of the eigenvalues lies within radius ρ·r
    assert (ev.abs() < 0.5 * r).double().mean().item() == pytest.approx(0.25, abs=0.04)
    # one planted outlier outside the disc
    B = A.clone()
    B += (
        3
        * r
        * torch.outer(torch.ones(n, dtype=torch.float64), torch.ones(n, dtype=torch.float64))
        / n
    )
    assert count_outliers(eigvals_general(B), 1.05 * r) == 1


def test_rmt_bad_arguments():
    with pytest.raises(ValueError, match="allowed values"):
        mp_edge(10, 5, 1.0, which="middle")
    with pytest.raises(ValueError):
        mp_edge(0, 5)
    with pytest.raises(ValueError):
        circular_law_radius(10, float("nan"))


def gaussian(n: int, m: int, sigma2: float, gen: torch.Generator) -> torch.Tensor:
    """An n×m matrix of iid N(0, sigma2) entries, float64."""
    return torch.randn(n, m, generator=gen, dtype=torch.float64) * math.sqrt(sigma2)


@pytest.mark.parametrize(("n", "m"), [(500, 200), (200, 500)])
def test_mp_edges_of_tall_and_wide_gaussian_matrices(gen, n, m):
    """The non-zero eigenvalues of XᵀX/n fill [σ²(1−√q)², σ²(1+√q)²], q = m/n, both ways."""
    X = gaussian(n, m, 0.7, gen)
    nonzero = eigvals_sym(X @ X.T / n) if m > n else eigvals_sym(X.T @ X / n)
    lo, hi = mp_edges(n, m, 0.7)
    assert (lo, hi) == pytest.approx((0.7 * (1 - math.sqrt(m / n)) ** 2,
                                      0.7 * (1 + math.sqrt(m / n)) ** 2), rel=1e-12)
    assert nonzero[-1].item() == pytest.approx(hi, rel=0.04)
    assert nonzero[0].item() == pytest.approx(lo, rel=0.15)


def test_mp_bulk_fit_counts_the_missing_zeros_when_m_exceeds_n(gen):
    """X of shape (200, 500), σ² = 0.7: XᵀX/n has 300 exact zeros. Given only its 200 non-zero
    eigenvalues, the fit must count the 300 zeros (E λ = σ² over all m eigenvalues), so σ² is
    0.7 (not the mean of the non-zero ones, σ²·m/n = 1.75) and the edge 0.7·(1 + √2.5)²."""
    n, m = 200, 500
    X = gaussian(n, m, 0.7, gen)
    nonzero = eigvals_sym(X @ X.T / n)
    full = eigvals_sym(X.T @ X / n)  # the same with the m − n zeros
    sigma2, edge, spikes = mp_bulk_fit(nonzero, n, m)
    assert sigma2 == pytest.approx(0.7, rel=0.02)
    assert edge == pytest.approx(mp_edge(n, m, sigma2), rel=1e-12)
    assert spikes == 0
    assert mp_bulk_fit(full, n, m) == pytest.approx((sigma2, edge, 0), rel=1e-9)


def test_mp_bulk_fit_finds_spikes_of_a_wide_matrix(gen):
    """Three population spikes ℓ = 20, 30, 40 over a white bulk (q = 2.5, BBP threshold √q):
    three eigenvalues above the fitted edge, and σ² of the bulk ≈ 1."""
    n, m = 200, 500
    scale = torch.ones(m, dtype=torch.float64)
    scale[:3] = torch.sqrt(torch.tensor([21.0, 31.0, 41.0], dtype=torch.float64))
    X = gaussian(n, m, 1.0, gen) * scale
    nonzero = eigvals_sym(X @ X.T / n)
    sigma2, edge, spikes = mp_bulk_fit(nonzero, n, m)
    assert spikes == 3
    assert sigma2 == pytest.approx(1.0, rel=0.05)
    assert edge == pytest.approx(mp_edge(n, m, 1.0), rel=0.05)
    assert nonzero[-4].item() < edge < nonzero[-3].item()


def test_mp_bulk_fit_of_flat_spectra_is_exact():
    """A flat spectrum lies inside its own edge: σ² is its mean over all m eigenvalues, exactly
    (1 for 100 ones with m = 100; 0.5 for 200 ones with m = 400, i.e. 200 missing zeros)."""
    ones = torch.ones(100, dtype=torch.float64)
    assert mp_bulk_fit(ones, 400, 100) == pytest.approx((1.0, 2.25, 0), rel=1e-12)
    wide = mp_bulk_fit(torch.ones(200, dtype=torch.float64), 200, 400)
    assert wide == pytest.approx((0.5, 0.5 * (1 + math.sqrt(2)) ** 2, 0), rel=1e-12)
    single = mp_bulk_fit(torch.tensor([2.0], dtype=torch.float64), 10, 1)
    assert single == pytest.approx((2.0, 2.0 * (1 + math.sqrt(0.1)) ** 2, 0), rel=1e-12)
    # no iteration: nothing fitted, every positive eigenvalue is above the edge 0
    assert mp_bulk_fit(ones, 400, 100, max_iter=0) == (0.0, 0.0, 100)


def test_mp_bulk_fit_works_in_float64(gen):
    """float32 eigenvalues are summed in float64: the same fit as their float64 copies."""
    X = gaussian(400, 100, 1.0, gen)
    ev = eigvals_sym(X.T @ X / 400).float()
    assert mp_bulk_fit(ev, 400, 100) == pytest.approx(mp_bulk_fit(ev.double(), 400, 100),
                                                      rel=1e-13)


def test_rmt_defaults_boundaries_and_names():
    assert circular_law_radius(9) == 3.0  # var defaults to 1
    assert circular_law_radius(1, 4.0) == 2.0 and circular_law_radius(5, 0.0) == 0.0
    assert mp_edge(1, 1) == 4.0 and mp_edge(4, 1, 0.0) == 0.0 and mp_edge(100, 25) == 2.25
    assert mp_edges(400, 100) == pytest.approx((0.25, 2.25))  # sigma2 defaults to 1
    for bad in [(0, 1.0), (-1, 1.0), (4, -1.0), (4, float("inf"))]:
        with pytest.raises(ValueError, match=r"circular_law_radius needs n > 0 and finite var"):
            circular_law_radius(*bad)
    for n, m in [(0, 5), (5, 0)]:
        with pytest.raises(ValueError, match=r"mp_edge needs positive n, m; got n="):
            mp_edge(n, m)
    for s2 in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=r"mp_edge needs a finite sigma2 >= 0"):
            mp_edge(4, 1, s2)
    with pytest.raises(ValueError, match=r"which='middle' is not allowed"):
        mp_edge(10, 5, 1.0, which="middle")
    nan = torch.tensor([1.0, float("nan")])
    for fn in (lambda e, **k: count_outliers(e, 1.0, **k),
               lambda e, **k: mp_bulk_fit(e, 4, 2, **k)):
        with pytest.raises(ValueError, match=r"^evals has non-finite"):
            fn(nan)
        with pytest.raises(ValueError, match=r"^spec has non-finite"):
            fn(nan, name="spec")


def test_count_outliers_is_strictly_beyond_the_edge():
    ev = torch.tensor([0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    assert count_outliers(ev, 1.0) == 2  # the eigenvalue at the edge is not an outlier
    assert count_outliers(torch.tensor([1j, -2.0 + 0j, 0.5]), 1.0) == 1  # |λ| for complex


def test_mp_density_support_and_defaults():
    x = torch.tensor([-1.0, 0.0, 0.25, 1.0, 2.25, 3.0], dtype=torch.float64)
    dens = mp_density(x, 0.25)  # sigma2 = 1: support [0.25, 2.25]
    assert dens.dtype == torch.float64
    assert dens[[0, 1, 2, 4, 5]].tolist() == [0.0] * 5
    assert dens[3].item() == pytest.approx(math.sqrt(1.25 * 0.75) / (2 * math.pi * 0.25))
    at_zero = mp_density([0.0, 1.0], 1.0)  # q = 1: the lower edge is 0, no atom, no 0/0
    assert at_zero.dtype == torch.float64
    assert at_zero.tolist() == pytest.approx([0.0, math.sqrt(3) / (2 * math.pi)])
    assert mp_density([1.0], 0.25, 2.0).item() == pytest.approx(
        math.sqrt((4.5 - 1.0) * (1.0 - 0.5)) / (2 * math.pi * 2.0 * 0.25))
