import math

import pytest
import torch

from callbacks.spectra import (
    alpha_req,
    condition_number,
    effective_rank,
    participation_ratio,
    spectral_entropy,
    spectrum_summary,
    stable_rank,
    topk,
)


def test_effective_rank_flat_and_rank_one():
    d = 37
    assert effective_rank(torch.full((d,), 2.5)) == pytest.approx(d, rel=1e-12)
    one = torch.zeros(d, dtype=torch.float64)
    one[5] = 4.0
    assert effective_rank(one) == pytest.approx(1.0)
    # tiny negative round-off is clamped, a genuinely negative spectrum is rejected
    noisy = one.clone()
    noisy[0] = -1e-12
    assert effective_rank(noisy) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        effective_rank(torch.tensor([1.0, -0.5]))


def test_effective_rank_between_bounds(gen):
    ev = torch.rand(50, generator=gen, dtype=torch.float64)
    er = effective_rank(ev)
    p = ev / ev.sum()
    assert er == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-12)
    assert er > 1 and er < ev.numel()  # strictly between rank-1 and flat
    assert spectral_entropy(ev) == pytest.approx(math.log(er))


def test_participation_ratio_and_stable_rank():
    d = 20
    assert participation_ratio(torch.ones(d)) == pytest.approx(d)
    ev = torch.tensor([4.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert participation_ratio(ev) == pytest.approx(36 / 18)
    assert stable_rank(ev) == pytest.approx(6 / 4)


def test_alpha_req_recovers_decay():
    k = torch.arange(1, 201, dtype=torch.float64)
    ev = 3.0 * k**-1.3
    assert alpha_req(ev) == pytest.approx(1.3, abs=1e-10)
    # a plateau head is excluded by k_min
    ev2 = ev.clone()
    ev2[:5] = ev2[5]
    assert alpha_req(ev2, k_min=10, k_max=150) == pytest.approx(1.3, abs=1e-10)
    assert abs(alpha_req(ev2) - 1.3) > 1e-3
    with pytest.raises(ValueError):
        alpha_req(ev, k_min=5, k_max=5)


def test_condition_number_topk_summary():
    ev = torch.tensor([1e-6, 1.0, 3.0, 10.0], dtype=torch.float64)
    assert condition_number(ev) == pytest.approx(1e7)
    assert condition_number(torch.tensor([0.0, 1.0])) == math.inf
    assert topk(ev, 2).tolist() == [10.0, 3.0]
    assert topk(ev, 2, largest=False).tolist() == [1e-6, 1.0]
    s = spectrum_summary(ev)
    assert s["top1"] == 10.0 and s["trace"] == pytest.approx(14.000001)
    assert s["condition_number"] == pytest.approx(1e7)
    assert s["stable_rank"] == pytest.approx(1.4000001)
    assert set(s) >= {
        "top1",
        "trace",
        "condition_number",
        "stable_rank",
        "effective_rank",
        "participation_ratio",
    }
    assert all(isinstance(v, float) for v in s.values())
