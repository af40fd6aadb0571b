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


def test_planted_power_law_alpha(gen):
    x = pareto(3000, 2.5, 1.0, gen)
    fit = powerlaw_fit(x)
    assert abs(fit.alpha - 2.5) < 0.15
    assert fit.ks_distance < 0.05
    assert fit.sigma == pytest.approx((fit.alpha - 1) / math.sqrt(fit.n_tail))


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
    x = pareto(300, 2.0, 1.0, gen)
    assert powerlaw_fit(x, min_tail=100).n_tail >= 100


def test_small_sample_rule_and_degenerate():
    x = torch.tensor(
        [1.0, 1.5, 2.0, 3.0, 4.5, 7.0, 11.0, 20.0, 35.0, 60.0, 110.0, 200.0], dtype=torch.float64
    )
    fit = powerlaw_fit(x)  # fewer than 20 values: tails of >= 8 points
    assert fit.n_tail >= 8 and math.isfinite(fit.alpha)
    assert math.isnan(powerlaw_fit(torch.tensor([1.0])).alpha)
    assert math.isnan(powerlaw_fit(torch.tensor([-1.0, 0.0, 2.0])).alpha)  # one positive value


def test_bad_xmin_rejected():
    with pytest.raises(ValueError, match="allowed values"):
        powerlaw_fit(torch.rand(10) + 1, xmin="auto")
    with pytest.raises(ValueError):
        powerlaw_fit(torch.rand(10) + 1, xmin=-1.0)
