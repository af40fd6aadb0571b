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
