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
    assert sd > 0  # it is a genuinely stochastic estimate
    single = hutchinson_trace(lambda v: A @ v, 150, 10, seed=0)
    assert single.n_matvecs == 10 and single.std_error > 0


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
    assert (dens >= 0).all()
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
    assert q.nodes.shape == (2, 3)
    torch.testing.assert_close(q.weights.sum(1), torch.ones(2, dtype=torch.float64))
