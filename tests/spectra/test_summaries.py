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


def test_effective_rank_of_known_spectra():
    """exp(entropy) of p = (1/2, 1/4, 1/4) is 2^1.5; k equal values among zeros give k; the
    scale of the spectrum does not matter."""
    ev = torch.tensor([2.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert effective_rank(ev) == pytest.approx(2**1.5, rel=1e-12)
    assert effective_rank(7.5 * ev) == pytest.approx(2**1.5, rel=1e-12)
    assert spectral_entropy(ev) == pytest.approx(1.5 * math.log(2), rel=1e-12)
    flat = torch.cat([torch.full((5,), 3.0), torch.zeros(20)])
    assert effective_rank(flat) == pytest.approx(5.0, rel=1e-12)
    assert spectral_entropy(flat) == pytest.approx(math.log(5), rel=1e-12)
    assert effective_rank(torch.zeros(4)) == 0.0 and spectral_entropy(torch.zeros(4)) == 0.0


def test_participation_ratio_and_stable_rank():
    d = 20
    assert participation_ratio(torch.ones(d)) == pytest.approx(d)
    ev = torch.tensor([4.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert participation_ratio(ev) == pytest.approx(36 / 18)
    assert stable_rank(ev) == pytest.approx(6 / 4)
    assert participation_ratio(torch.zeros(3)) == 0.0 and stable_rank(torch.zeros(3)) == 0.0
    assert stable_rank(torch.tensor([1.0, 2.0, -1e-9])) == pytest.approx(1.5)  # round-off
    with pytest.raises(ValueError, match="non-negative"):
        stable_rank(torch.tensor([1.0, -0.5]))


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
    p = ev / ev.sum()
    assert s["effective_rank"] == pytest.approx(math.exp(-float((p * p.log()).sum())), rel=1e-12)
    assert s["participation_ratio"] == pytest.approx(14.000001**2 / 110.000000000001, rel=1e-12)
    assert (s["min"], s["n"]) == (1e-6, 4.0)
    assert all(isinstance(v, float) for v in s.values())


def test_summary_of_an_indefinite_spectrum_uses_magnitudes():
    """A Hessian-like spectrum (−3, 1): ranks are taken on |λ| = (3, 1), the rest as is."""
    s = spectrum_summary(torch.tensor([-3.0, 1.0], dtype=torch.float64))
    assert (s["top1"], s["min"], s["trace"]) == (1.0, -3.0, -2.0)
    assert s["condition_number"] == pytest.approx(3.0)
    assert s["stable_rank"] == pytest.approx(4 / 3)
    assert s["effective_rank"] == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                           + 0.25 * math.log(0.25))))
    assert s["participation_ratio"] == pytest.approx(4 / 10)  # (Σλ)²/Σλ² on the signed values


def test_round_off_tolerance_of_the_psd_checks():
    """Negatives down to 1e-6·max|λ| are round-off (clamped to 0); below that they raise."""
    assert effective_rank(torch.tensor([1.0, -1e-6], dtype=torch.float64)) == 1.0
    assert stable_rank(torch.tensor([2.0, 2.0, -2e-6], dtype=torch.float64)) == 2.0
    for fn in (effective_rank, stable_rank):
        with pytest.raises(ValueError, match=r"^ev: expected a non-negative spectrum \(PSD "
                                             r"matrix\), min eigenvalue -1.5e-06"):
            fn(torch.tensor([1.0, -1.5e-6], dtype=torch.float64), name="ev")
    with pytest.raises(ValueError, match=r"^ev: expected a real spectrum, got complex"):
        effective_rank(torch.tensor([1j, 1.0]), name="ev")
    with pytest.raises(ValueError, match=r"^evals: expected a real spectrum"):
        participation_ratio(torch.tensor([1j, 1.0]))


def test_condition_number_topk_and_alpha_req_edges():
    assert math.isnan(condition_number(torch.zeros(3)))
    assert condition_number(torch.tensor([-4.0, 2.0])) == 2.0  # on |λ|
    ev = torch.tensor([1.0, 3.0, 2.0, 0.5], dtype=torch.float64)
    assert topk(ev, 10).tolist() == [3.0, 2.0, 1.0, 0.5]  # k clipped to the size
    assert topk(ev, 1, largest=False).tolist() == [0.5]
    k = torch.arange(1, 41, dtype=torch.float64)
    decay = torch.cat([2.0 * k**-0.8, torch.zeros(5, dtype=torch.float64)])  # zeros: dropped
    assert alpha_req(decay) == pytest.approx(0.8, abs=1e-12)
    assert alpha_req(decay, k_min=2, k_max=1000) == pytest.approx(0.8, abs=1e-12)
    assert alpha_req(decay[:2]) == pytest.approx(0.8, abs=1e-12)  # two ranks are enough
    for kw in ({"k_min": 0}, {"k_min": 40}, {"k_min": 3, "k_max": 3}):
        with pytest.raises(ValueError, match=r"^ev: alpha_req needs at least 2 positive"):
            alpha_req(decay, name="ev", **kw)


@pytest.mark.parametrize("fn", [effective_rank, participation_ratio, stable_rank,
                                condition_number, spectral_entropy, spectrum_summary,
                                lambda e, **kw: topk(e, 2, **kw), alpha_req])
def test_errors_name_the_spectrum(fn):
    bad = torch.tensor([1.0, float("nan"), 2.0])
    with pytest.raises(ValueError, match=r"^evals has non-finite"):
        fn(bad)
    with pytest.raises(ValueError, match=r"^spec has non-finite"):
        fn(bad, name="spec")
    with pytest.raises(ValueError, match=r"^spec: expected a real spectrum"):
        fn(torch.tensor([1j, 2.0]), name="spec")


def test_small_spectra_are_not_zeroed():
    """Ratios of small eigenvalues (all below 1) are still ratios, and the PSD tolerance is
    relative to the spectrum's own scale."""
    small = torch.tensor([0.1, 0.1, 0.05, 0.0], dtype=torch.float64)
    assert participation_ratio(small) == pytest.approx(0.25**2 / 0.0225)
    assert stable_rank(small) == pytest.approx(2.5)
    assert effective_rank(torch.tensor([1e-3, -1e-10], dtype=torch.float64)) == 1.0
    with pytest.raises(ValueError, match="non-negative"):
        effective_rank(torch.tensor([1e-3, -1e-7], dtype=torch.float64))  # 1e-4 of the scale
