"""two_step_gd: GD step by hand, spectra helpers, the predicted laws, one step, outlier counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONF
from runner.run import run
from runner.task_params import build_params
from runner.validation import ConfigError
from tasks.two_step_gd import model, theory
from tasks.two_step_gd.analysis import summarize, term_verdict
from tasks.two_step_gd.config import Config
from tasks.two_step_gd.data import TwoStepData, draw
from tasks.two_step_gd.measure import gap_edge, hadamard_power_overlaps, overlaps, top_singular

QUIET = ["logger=csv", "callbacks=none", "print_results=false"]


def run_task(make_cfg, tmp_path, name, *overrides):
    return run(make_cfg(["task=two_step_gd", *QUIET, *overrides], tmp_path / name))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("key,value,match", [
    ("alpha1", 0.5, r"task.alpha1=0.5 is out of range; allowed: \[0, 0.5\)"),
    ("alpha1", -0.1, r"task.alpha1=-0.1 is out of range"),
    ("alpha2", 0.7, r"task.alpha2=0.7 is out of range; allowed: \[0, 0.5\)"),
    ("n_hidden", 4, r"task.n_hidden=4 is out of range; allowed: \[8, inf\)"),
])
def test_bad_values_raise_config_error_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config(**{key: value})


@pytest.mark.parametrize("key,value,match", [
    ("activation", "tanh",
     r"task.activation='tanh' .*is not allowed; expected one of: softplus, relu_centered"),
    ("target", "ie3", r"task.target='ie3' .*is not allowed; expected one of: ie1, ie2"),
    ("alpha1", 0.5, r"task.alpha1=0.5 is out of range; allowed: \[0, 0.5\)"),
])
def test_bad_task_node_is_rejected_naming_the_key(key, value, match):
    node = OmegaConf.load(str(CONF / "task" / "two_step_gd.yaml"))
    node[key] = value
    with pytest.raises(ConfigError, match=match):
        build_params(node)


def test_bad_value_fails_before_any_work(make_cfg, tmp_path, data_dir):
    before = sorted(data_dir.rglob("*"))  # the session's shared cache: nothing may be added
    with pytest.raises(ConfigError, match="task.alpha2"):
        run_task(make_cfg, tmp_path, "bad", "task.alpha2=0.5", "task.n_hidden=16")
    assert sorted(data_dir.rglob("*")) == before
    assert not (tmp_path / "bad").exists()  # a single run with a bad config leaves no run dir


def test_small_ratio_gives_too_few_samples():
    with pytest.raises(ConfigError, match="task.n_ratio gives 4"):
        Config(n_hidden=8, n_ratio=0.5)


# ----------------------------------------------------------------------------- the GD step
def hand_gradient(w, a, x, y, act):
    """∇L by explicit loops: row j = −(1/n) Σ_i r_i a_j σ'(w_jᵀx_i) x_i (float64)."""
    sigma, dsigma = model.activation(act)
    n, n_rows = x.shape[0], w.shape[0]
    r = [float(y[i]) - sum(float(a[j]) * float(sigma(w[j] @ x[i])) for j in range(n_rows))
         for i in range(n)]
    grad = torch.zeros_like(w)
    for j in range(n_rows):
        for i in range(n):
            grad[j] -= r[i] * float(a[j]) * float(dsigma(w[j] @ x[i])) * x[i] / n
    return grad


@pytest.mark.parametrize("act", ["softplus", "relu_centered"])
def test_gradient_matches_loops_and_autograd(act):
    p = {k: v.double() for k, v in draw(3, 8, 10, 12, "ie1", 0.1, "sphere").items()}
    grad, r = model.gradient(p["w0"], p["a"], p["x1"], p["y1"], act)
    assert torch.allclose(grad, hand_gradient(p["w0"], p["a"], p["x1"], p["y1"], act),
                          atol=1e-12)
    w = p["w0"].clone().requires_grad_(True)
    sigma, _ = model.activation(act)
    loss = 0.5 * ((p["y1"] - sigma(p["x1"] @ w.T) @ p["a"]) ** 2).mean()
    loss.backward()
    assert torch.allclose(grad, w.grad, atol=1e-12)
    assert float(loss.detach()) == pytest.approx(0.5 * float((r * r).mean()), rel=1e-12)


@pytest.mark.parametrize("reuse", [False, True])
def test_two_steps_are_exactly_c_n_alpha_times_the_gradient(make_cfg, tmp_path, reuse):
    """Run N = d = n = 8 through the runner; redo both steps by hand in float64."""
    c, a1, a2, width = 0.7, 0.3, 0.45, 8
    res = run_task(make_cfg, tmp_path, f"hand{reuse}", f"task.n_hidden={width}",
                   f"task.step_scale={c}", f"task.alpha1={a1}", f"task.alpha2={a2}",
                   "task.n_top_sv=4", f"task.batch_reuse={str(reuse).lower()}", "seed=5",
                   "callbacks=default")
    pm = res["paper_metrics"]
    assert pm["eta1"] == c * width**a1 and pm["eta2"] == c * width**a2  # exactly c·N^α
    assert res["global_step"] == 2
    p = {k: v.double() for k, v in draw(5, width, width, width, "ie1", 0.1, "sphere").items()}
    w1 = p["w0"] - c * width**a1 * hand_gradient(p["w0"], p["a"], p["x1"], p["y1"], "softplus")
    x2, y2 = (p["x1"], p["y1"]) if reuse else (p["x2"], p["y2"])
    w2 = w1 - c * width**a2 * hand_gradient(w1, p["a"], x2, y2, "softplus")
    ckpt = torch.load(tmp_path / f"hand{reuse}" / "checkpoints" / "last.ckpt",
                      weights_only=False)
    w_run = ckpt["state_dict"]["w"].double()
    assert torch.allclose(w_run, w2, rtol=1e-4, atol=1e-5 * float(w2.abs().max()))
    sv_dw2 = torch.linalg.svdvals(w2 - w1)
    assert np.allclose(pm["top_singular_values_dw2"], sv_dw2[:4].numpy(), rtol=1e-3)


def test_step_size_formula():
    assert model.step_size(2.0, 1000, 0.3) == pytest.approx(2.0 * 1000**0.3, rel=1e-15)
    assert model.step_size(1.0, 4000, 0.0) == 1.0


# ----------------------------------------------------------------------------- spectra helpers
def test_top_singular_and_gap_edge_on_a_constructed_spiked_matrix():
    gen = torch.Generator().manual_seed(0)
    n = 300
    noise = torch.randn(n, n, generator=gen, dtype=torch.float64) / n**0.5  # edge 2
    u = torch.linalg.qr(torch.randn(n, 3, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(n, 3, generator=gen, dtype=torch.float64))[0]
    w = noise + u @ torch.diag(torch.tensor([12.0, 6.0, 4.0], dtype=torch.float64)) @ v.T
    top = top_singular(w, 10)
    dense = torch.linalg.svdvals(w)
    assert torch.allclose(top.values, dense[:10], rtol=1e-8)
    edge, count = gap_edge(top.values)
    assert count == 3 and edge == pytest.approx(float(dense[3]))
    assert float(dense[3]) < 2.2  # the edge sits at the top of the bulk
    # BBP: a spike θ > 1 (bulk radius 1 per side) sits at √((1+θ²)(1+θ²)/θ²) = θ + 1/θ
    assert float(top.values[0]) == pytest.approx(12 + 1 / 12, rel=0.02)
    assert abs(float(top.right[:, 0] @ v[:, 0])) > 0.98
    assert gap_edge(torch.linalg.svdvals(noise)[:10])[1] == 0


def test_top_singular_triplets_of_a_known_svd_and_the_dense_values():
    """W = U diag(s) Vᵀ (80 × 60, s = 0.9, 0.5, 0.3, 0.2, 0.1 then 0): the top 3 triplets are
    (s_i, u_i, v_i) up to a common sign, ‖W‖_F² = Σ s² = 1.2, shape (80, 60); `dense` adds all
    singular values (zeros included) and reports the top k of them; float32 W works the same.
    Overlaps: |⟨e_i, u⟩|/‖u‖ of u = (3, 4, 0) are 0.6 and 0.8 (float32 u, float64 vectors)."""
    gen = torch.Generator().manual_seed(3)
    u = torch.linalg.qr(torch.randn(80, 5, generator=gen, dtype=torch.float64))[0]
    v = torch.linalg.qr(torch.randn(60, 5, generator=gen, dtype=torch.float64))[0]
    s = torch.tensor([0.9, 0.5, 0.3, 0.2, 0.1], dtype=torch.float64)
    w = (u * s) @ v.T
    top = top_singular(w, 3)
    assert torch.allclose(top.values, s[:3], rtol=1e-10) and top.full is None
    signs = (top.right * v[:, :3]).sum(0).sign()
    assert torch.allclose(top.right * signs, v[:, :3], atol=1e-9)
    assert torch.allclose(top.left * signs, u[:, :3], atol=1e-9)
    assert top.frob2 == pytest.approx(1.2, rel=1e-12) and top.shape == (80, 60)
    dense = top_singular(w, 3, method="dense")
    assert dense.full.shape == (60,) and torch.allclose(dense.full[:5], s, rtol=1e-10)
    assert torch.allclose(dense.full[5:], torch.zeros(55, dtype=torch.float64), atol=1e-12)
    assert torch.equal(dense.values, dense.full[:3])
    single = top_singular(w.float(), 2)
    assert single.values.dtype == torch.float64
    assert torch.allclose(single.values, s[:2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"^WtW matvec output has non-finite"):
        top_singular(w * float("nan"), 2)
    assert overlaps(torch.eye(3, 2, dtype=torch.float64),
                    torch.tensor([3.0, 4.0, 0.0])) == pytest.approx([0.6, 0.8])
    # full rank (bulk + 3 spikes, 300 × 300): the top-10 right vectors match the dense SVD's to
    # 1e-8 (the Lanczos tolerance 1e-10 on WᵀW; a looser 1e-6 leaves 1e-6 on the bulk ones)
    noise = torch.randn(300, 300, generator=gen, dtype=torch.float64) / 300**0.5
    a, b = torch.randn(2, 300, generator=gen, dtype=torch.float64)
    spiked = noise + 3.0 * torch.outer(a / a.norm(), b / b.norm())
    ten = top_singular(spiked, 10)
    ref = torch.linalg.svd(spiked)[2][:10].T
    sign = (ten.right * ref).sum(0).sign()
    assert torch.allclose(ten.right * sign, ref, atol=1e-8)


def test_gap_edge_boundary_and_minimum_size():
    """s = (10, 2, 1.5, 1, 0.5, 0): k/2 = 3, spacing (s_3 − s_6)/3 = 0.5, gaps (8, 0.5, 0.5).
    The first gap counts only when it exceeds factor·spacing: not at factor 16 (8 = 8), at
    15.9 (m = 1, edge s_2 = 2). Four values are the minimum (three raise)."""
    s = torch.tensor([10.0, 2.0, 1.5, 1.0, 0.5, 0.0], dtype=torch.float64)
    assert gap_edge(s, gap_factor=16.0) == (10.0, 0)
    assert gap_edge(s, gap_factor=15.9) == (2.0, 1)
    assert gap_edge(torch.tensor([9.0, 1.0, 0.9, 0.8], dtype=torch.float64)) == (1.0, 1)
    with pytest.raises(ValueError, match=r"^gap_edge needs at least 4 top singular values, got 3"):
        gap_edge(s[:3])


def test_hadamard_power_overlaps():
    a = torch.tensor([1.0, -2.0, 3.0, 0.5], dtype=torch.float64)
    left = torch.stack([a / a.norm(), a**2 / (a**2).norm()], 1)
    assert hadamard_power_overlaps(left, a) == pytest.approx([1.0, 1.0])
    assert hadamard_power_overlaps(left, a.float()) == pytest.approx([1.0, 1.0])  # cast to left's


def null_and_spiked_draws(n_draws: int, width: int = 400,
                          thetas: tuple[float, ...] = (3.0, 2.0)) -> list[tuple[torch.Tensor,
                                                                                torch.Tensor]]:
    """Return (top-10 singular values of a pure bulk, of the same bulk plus spikes) per draw.

    The bulk has rows on the sphere of R^width (edge 1 + √(N/d) = 2); the spiked copy adds
    Σ θ_i u_i v_iᵀ with orthonormal u, v, whose outliers sit at the BBP positions θ + 1/θ
    (3.33 and 2.5 for θ = 3, 2), far above the edge 2 + O(N^{−2/3}).
    """
    gen = torch.Generator().manual_seed(2024)
    out = []
    for _ in range(n_draws):
        noise = torch.randn(width, width, generator=gen, dtype=torch.float64)
        noise = noise / noise.norm(dim=1, keepdim=True)
        u = torch.linalg.qr(torch.randn(width, len(thetas), generator=gen,
                                        dtype=torch.float64))[0]
        v = torch.linalg.qr(torch.randn(width, len(thetas), generator=gen,
                                        dtype=torch.float64))[0]
        spiked = noise + u @ torch.diag(torch.tensor(thetas, dtype=torch.float64)) @ v.T
        out.append((torch.linalg.svdvals(noise)[:10], torch.linalg.svdvals(spiked)[:10]))
    return out


def test_gap_rule_counts_no_outlier_in_pure_bulk_and_every_bbp_spike():
    """The gap rule against values known independently of it: 30 pure-bulk draws (400×400, rows
    on the sphere) have 0 outliers, and the same draws plus spikes θ = 3, 2 have exactly the 2
    BBP outliers at θ + 1/θ, with the edge at the top bulk value (< 2.1, the MP edge 2 plus
    Tracy–Widom room). The factor matters: on these null draws the largest top-5 gap is 2–7
    mean spacings (measured on 200 other draws: median 2.5, 99th percentile 5.2, max 6.9), so
    half the factor (4) counts false outliers in 4 of these 30 (24 of those 200)."""
    draws = null_and_spiked_draws(30)
    null_counts = [gap_edge(null)[1] for null, _ in draws]
    assert null_counts == [0] * len(draws)
    for _, spiked in draws:
        edge, count = gap_edge(spiked)
        assert count == 2
        assert edge == float(spiked[2]) and edge < 2.1
    # an outlier fluctuates by O(N^{−1/2}) (≈ 5% at N = 400) around θ + 1/θ: each draw within
    # 8%, the mean of the 30 within 1.5% (standard error ≈ 5%/√30 ≈ 1%)
    for k, theta in enumerate((3.0, 2.0)):
        values = torch.stack([spiked[k] for _, spiked in draws])
        assert torch.allclose(values, torch.full_like(values, theta + 1 / theta), rtol=0.08)
        assert float(values.mean()) == pytest.approx(theta + 1 / theta, rel=0.015)
    half = [gap_edge(null, gap_factor=4.0)[1] for null, _ in draws]
    assert sum(c > 0 for c in half) >= 1  # the rule with half its factor is not null-safe


def test_w0_bulk_edge_for_a_non_square_layer(tmp_path):
    """bulk_edge_w0_theory = 1 + √(N/d): 1 + √(1/2) = 1.7071 for d = 2N, against the formula's
    value and the top singular value of W0 (N = 200, d = 400, rows on the sphere), which lies
    within a few % of the edge (Tracy–Widom scale N^{−2/3} ≈ 3%)."""
    import pytorch_lightning as pl

    from tasks.two_step_gd.module import TwoStepModule

    cfg = Config(n_hidden=200, d_ratio=2.0, n_top_sv=4)
    data = TwoStepData(cfg, str(tmp_path), seed=0)
    module = TwoStepModule(cfg)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, data)
    edge = module.stats["bulk_edge_w0_theory"]
    assert edge == pytest.approx(1 + math.sqrt(0.5), rel=1e-12)
    top = float(torch.linalg.svdvals(data.problem["w0"].double())[0])
    assert top == pytest.approx(edge, rel=0.05)


def hermite_coefficients(fn, degree: int = 3) -> list[float]:
    """Return c_j = E[f(z) He_j(z)] / j! for z ~ N(0, 1), j = 0..degree (Gauss–Hermite
    quadrature with 80 nodes, exact for polynomials of degree < 160)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    weights = weights / weights.sum()
    values = fn(torch.from_numpy(nodes)).numpy()
    return [float((weights * values * np.polynomial.hermite_e.hermeval(
        nodes, [0] * j + [1])).sum()) / math.factorial(j) for j in range(degree + 1)]


def test_targets_and_activation_against_quadrature():
    """The targets' Hermite coefficients (spec: ie1 = He1 + He2/√2, ie2 = He2/√2) and the
    centred ReLU's mean, by quadrature, independent of the code's formulas."""
    r2 = 1 / math.sqrt(2)
    assert hermite_coefficients(model.target_fn("ie1")) == pytest.approx([0, 1, r2, 0],
                                                                         abs=1e-10)
    assert hermite_coefficients(model.target_fn("ie2")) == pytest.approx([0, 0, r2, 0],
                                                                         abs=1e-10)
    # E[relu(z)] − 1/√(2π) = 0: a dense midpoint rule on [−12, 12] (the kink defeats quadrature)
    z = torch.linspace(-12, 12, 2_400_001, dtype=torch.float64)
    density = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    sigma, _ = model.activation("relu_centered")
    assert float((sigma(z) * density).sum() * (z[1] - z[0])) == pytest.approx(0.0, abs=1e-8)


# ----------------------------------------------------------------------------- the predicted laws
@pytest.mark.parametrize("ell", [1, 2, 3, 4, 5])
def test_one_step_feature_spike_law_at_interval_midpoints(ell):
    lo, hi = (ell - 1) / (2 * ell), ell / (2 * ell + 2)
    mid = 0.5 * (lo + hi)
    assert theory.predicted_feature_spikes(mid) == ell
    margins = theory.feature_spike_exponents(mid, ell + 1)
    assert all(m > 0 for m in margins[:ell]) and margins[ell] < 0


def test_outlier_law_on_the_spec_grid():
    grid = {(0.25, 0.10): 0, (0.25, 0.35): 1, (0.20, 0.45): 1, (0.30, 0.45): 2,
            (0.35, 0.45): 3, (0.40, 0.45): 4}
    for (a1, a2), extra in grid.items():
        assert theory.predicted_extra_floor(a1, a2) == extra
        assert theory.predicted_outliers_w2(a1, a2) == 1 + extra
    assert theory.predicted_extra_strict(0.35, 0.45) == 2  # boundary: e_3 = 0 not counted
    assert theory.predicted_extra_strict(0.30, 0.45) == 2
    assert theory.predicted_extra_floor(0.25, 0.0) == 0
    assert theory.term_exponents(0.40, 0.45, 4) == pytest.approx([0.45, 0.35, 0.25, 0.15])


def test_strict_count_of_a_vanishing_alpha2_is_zero():
    """α2 = 5e-10, α1 = 0: the ratio α2/(1/2 − α1) is the slack EPS = 1e-9 itself; every e_k,
    k ≥ 1, is 5e-10 − k/2 < 0, so no term counts (0, not ⌈0⌉ − 1 = −1)."""
    assert theory.predicted_extra_strict(0.0, 5e-10) == 0
    assert theory.predicted_outliers_w2(0.0, 5e-10, strict=True) == 1


def test_counts_equal_a_direct_enumeration_of_the_terms():
    """Over a 49×50 grid of (α1, α2) (boundary ratios included), the floor count equals
    #{k ≥ 1 : α2 − k(1/2 − α1) ≥ 0} and the strict count #{k ≥ 1 : ... > 0}, enumerated term
    by term (the exponent written out here, not taken from theory.term_exponents)."""
    for a1 in np.round(np.arange(0.0, 0.49, 0.01), 2):
        for a2 in np.round(np.arange(0.0, 0.50, 0.01), 2):
            exps = [a2 - k * (0.5 - a1) for k in range(1, 200)]
            assert theory.predicted_extra_floor(a1, a2) == sum(e >= -1e-12 for e in exps)
            assert theory.predicted_extra_strict(a1, a2) == sum(e > 1e-12 for e in exps)
            assert theory.predicted_outliers_w2(a1, a2, strict=True) == 1 + sum(
                e > 1e-12 for e in exps)
            assert theory.term_exponents(a1, a2, 3)[1:] == pytest.approx(exps[:2], abs=1e-12)


def test_feature_spike_margins_equal_the_spec_values():
    """The spec's Pitfalls: the top spike's margin over the bulk, 1/2 − k(1/2 − α), is 0.15,
    0.08 and 0.065 at α = 0.15, 0.29, 0.355 (k = 1, 2, 3); the margins of k = 1..4."""
    for alpha, k, margin in ((0.15, 1, 0.15), (0.29, 2, 0.08), (0.355, 3, 0.065)):
        assert theory.feature_spike_exponents(alpha, 4)[k - 1] == pytest.approx(margin,
                                                                                 abs=1e-12)
        assert theory.predicted_feature_spikes(alpha) == k
    assert theory.feature_spike_exponents(0.3, 4) == pytest.approx([0.3, 0.1, -0.1, -0.3])


def test_feature_spike_count_equals_a_direct_enumeration():
    """ℓ(α) = #{k ≥ 1 : kα + 1 − k/2 > 1/2} (spike k beats the √N bulk strictly), enumerated
    over α = 0, 0.005, …, 0.495 and at every interval end ℓ/(2ℓ + 2), where spike ℓ + 1 sits
    exactly on the bulk (margin 0) and is not counted."""
    ends = [ell / (2 * ell + 2) for ell in range(1, 10)]
    for alpha in [*np.round(np.arange(0.0, 0.4951, 0.005), 3), *ends]:
        count = sum(k * alpha + 1 - k / 2 > 0.5 + 1e-12 for k in range(1, 500))
        assert theory.predicted_feature_spikes(float(alpha)) == count, alpha


def test_claim2_verdicts():
    assert term_verdict(0.45, 0.50) == "pass" and term_verdict(0.45, 0.70) == "FAIL"
    assert term_verdict(-0.15, 0.05) == "pass" and term_verdict(-0.15, 0.3) == "FAIL"
    assert term_verdict(0.45 - 2 * 0.3, 0.0) == "pass"  # −0.15 in floats is still scored
    assert term_verdict(0.05, 0.9) == "marginal"


def test_summarize_recovers_known_exponents():
    results = []
    for seed in (0, 1):
        for width in (500, 1000, 2000):
            params = {"alpha1": 0.2, "alpha2": 0.45, "target": "ie1", "batch_reuse": False,
                      "activation": "softplus", "step_scale": 1.0, "n_hidden": width}
            pm = {"outliers_w1": 1, "outliers_w2": 2, "predicted_outliers_w2": 2,
                  "predicted_outliers_w2_strict": 2, "alignment_beta": 0.3,
                  "alignment_beta_w1": 0.5, "feature_spikes": 1,
                  "predicted_feature_spikes": 1, "residual_rms_step2": 2.0 * width**0.1,
                  "bulk_edge_dw2": 1.0, "top_singular_values_dw1": [3.0 * width**0.2],
                  "top_singular_values_dw2": [5 * width**0.45, 2 * width**0.15, 1.0, 1.0]}
            results.append({"status": "completed", "seed": seed, "params": params,
                            "paper_metrics": pm})
    results.append({"status": "failed", "seed": 2, "paper_metrics": {}})
    row = summarize(results).iloc[0]
    assert row["fit0"] == pytest.approx(0.45) and row["fit1"] == pytest.approx(0.15)
    assert row["norm0"] == pytest.approx(0.35) and row["fit_dw1"] == pytest.approx(0.2)
    assert row["raw0"] == "pass" and row["raw2"] == "pass" and row["n_seeds"] == 2


# ----------------------------------------------------------------------------- runs
def test_smoke_run_files_and_metrics(make_cfg, tmp_path, data_dir):
    res = run_task(make_cfg, tmp_path, "smoke", "task.n_hidden=64", "task.sv_method=dense")
    assert res["status"] == "completed" and res["global_step"] == 2
    pm = res["paper_metrics"]
    for key in ("outliers_w1", "outliers_w2", "predicted_outliers_w2", "bulk_edge",
                "top_singular_values_dw2", "alignment_beta"):
        assert key in pm
    assert len(pm["top_singular_values_dw2"]) == 10
    assert all(math.isfinite(v) for v in pm["top_singular_values_dw2"])
    assert pm["bulk_edge_w0_theory"] == pytest.approx(2.0)
    # the alignments against an independent computation: W2 redone in float64 (model.gradient,
    # checked against loops above), its right singular vectors from a dense SVD
    p = {k: v.double() for k, v in draw(0, 64, 64, 64, "ie1", 0.1, "sphere").items()}
    eta1, eta2 = pm["eta1"], pm["eta2"]
    w1 = p["w0"] - eta1 * model.gradient(p["w0"], p["a"], p["x1"], p["y1"], "softplus")[0]
    w2 = w1 - eta2 * model.gradient(w1, p["a"], p["x2"], p["y2"], "softplus")[0]
    dense_v = torch.linalg.svd(w2)[2][:10].T
    expected = (dense_v.T @ p["beta"]).abs()
    assert np.allclose(pm["alignments_beta_w2"], expected.numpy(), atol=1e-3)
    n_out = pm["outliers_w2"]
    assert pm["alignment_beta"] == (max(pm["alignments_beta_w2"][:n_out]) if n_out else 0.0)
    assert (tmp_path / "smoke" / "metrics.csv").exists()
    # the draw is cached once and reused by another (alpha1, alpha2) at the same (N, seed)
    def draws():
        return [f for f in (data_dir / "two_step_gd").glob("*.safetensors")
                if json.loads(f.with_suffix(".json").read_text())["n_hidden"] == 64]

    before = {f.name: f.stat().st_mtime for f in draws()}
    assert len(before) == 1  # one file holds the samples, weights and teacher
    run_task(make_cfg, tmp_path, "smoke2", "task.n_hidden=64", "task.alpha1=0.2")
    assert {d.name: d.stat().st_mtime for d in draws()} == before


def test_spectral_matrices_over_the_two_steps(tmp_path):
    cfg = Config(n_hidden=32, n_top_sv=4)
    data = TwoStepData(cfg, str(tmp_path), seed=0)
    data.setup()
    p = data.problem
    fresh = draw(0, 32, 32, 32, "ie1", 0.1, "sphere")
    assert sorted(p) == sorted(fresh)  # the cached draw is the draw, bit for bit, in float32
    assert all(p[k].dtype == torch.float32 and torch.equal(p[k], fresh[k]) for k in fresh)
    assert torch.allclose(p["w0"].norm(dim=1), torch.ones(32), atol=1e-5)  # rows on the sphere
    assert p["beta"].norm() == pytest.approx(1.0, abs=1e-6)
    import pytorch_lightning as pl

    from tasks.two_step_gd.module import TwoStepModule

    module = TwoStepModule(cfg)
    pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, data)
    assert set(module.spectral_matrices()) == {"W0", "W1", "dW1", "F0", "F1"}
    mats = {k: v["matrix"] for k, v in module.spectral_matrices().items()}
    assert torch.allclose(mats["dW1"], mats["W1"] - mats["W0"])
    assert all(v["kind"] == "singular_values" for v in module.spectral_matrices().values())


def test_one_step_outlier_and_the_count_at_0_20_0_45(make_cfg, tmp_path):
    """Claim 1 at N = 1000 (ie1, α1 = 0.2): exactly one outlier of W1; its right singular vector
    aligns with β far above chance (1/√d ≈ 0.03) and as the rank-one picture predicts:
    v ∝ (1/n) Xᵀr, so |⟨v, β⟩| ≈ |⟨u, β⟩| / √(‖u‖² + (d/n) E r²), u = E[r x] = β − μ1 W0ᵀa
    (μ1 = E σ'(z) = 1/2 for softplus). The same run checks the outlier law at (0.20, 0.45),
    the grid point whose every term has |e_k| >= 0.15: 1 + 1 outliers of W2 (as in every seed at
    N = 500 and 1000; at N = 2000 and 4000 3 of 6 runs count 3, the slow strict xfail
    test_claim2_total_count_where_no_term_is_marginal). The tolerance 0.1
    on the rank-one value is 3 sd of its finite-N error: measured − predicted over N = 500,
    1000, 2000 × seeds 0–2 (outlier_law sweep) ranged −0.048 … +0.066, sd 0.032."""
    width = 1000
    res = run_task(make_cfg, tmp_path, "one", f"task.n_hidden={width}", "task.alpha1=0.2",
                   "task.alpha2=0.45")
    pm = res["paper_metrics"]
    assert pm["outliers_w1"] == 1
    assert pm["top_singular_values_w1"][0] > 2 * pm["bulk_edge_w1"]
    p = draw(0, width, width, width, "ie1", 0.1, "sphere")
    u = p["beta"].double() - 0.5 * p["w0"].double().T @ p["a"].double()
    mean_r2 = 2 * pm["loss_before_step1"]
    predicted = float(u @ p["beta"].double()) / math.sqrt(float(u @ u) + mean_r2)
    assert pm["alignment_beta_w1"] > 10 / math.sqrt(width)
    assert pm["alignment_beta_w1"] == pytest.approx(predicted, abs=0.1)
    assert all(abs(e) >= 0.15 - 1e-9 for e in theory.term_exponents(0.20, 0.45, 6))
    assert pm["outliers_w2"] == pm["predicted_outliers_w2"] == 2


CLAIM_SEEDS = (0, 1, 2, 3, 4)


def second_value_separation(pm: dict) -> float:
    """Return z = log(s2(W2)/s3(W2)): how far the second singular value of W2 stands above the
    next one (≈ the top bulk spacing, 0.01, without a second outlier)."""
    s = pm["top_singular_values_w2"]
    return math.log(s[1] / s[2])


def test_claim_second_step_adds_an_outlier_iff_alpha2_exceeds_half_minus_alpha1(make_cfg,
                                                                                 tmp_path):
    """The central claim's direction at the smallest width that shows it (N = 500; at N = 250
    the paired difference below is only 2.0 standard errors): at α1 = 0.2 the term k = 1 of
    the second step has exponent e1 = α2 − 0.3, so α2 = 0.45 (e1 = +0.15, predicted 1 + 1
    outliers of W2) adds a second outlier that α2 = 0.15 (e1 = −0.15, predicted 1 + 0) lacks.
    Statistic z = log(s2(W2)/s3(W2)), paired by seed (the same draw, W1 and batch 2).

    Margin from the seed-to-seed spread (seeds 0–4, measured): z = 0.204, 0.326, 0.423, 0.117,
    0.124 at α2 = 0.45 vs 0.008–0.018 at α2 = 0.15; paired difference mean 0.228, sd 0.130.
    The test asks for mean − 3·sd/√5 > 0 (a 3-standard-error direction; measured 3.92) and
    every seed's z at α2 = 0.45 above every seed's z at α2 = 0.15."""
    z = {}
    for a2 in (0.15, 0.45):
        z[a2] = [second_value_separation(run_task(
            make_cfg, tmp_path, f"claim{a2}_{seed}", "task.n_hidden=500", "task.alpha1=0.2",
            f"task.alpha2={a2}", f"seed={seed}")["paper_metrics"]) for seed in CLAIM_SEEDS]
    diff = np.array(z[0.45]) - np.array(z[0.15])
    stderr = float(diff.std(ddof=1)) / math.sqrt(diff.size)
    assert float(diff.mean()) - 3 * stderr > 0, (z, float(diff.mean()), stderr)
    assert min(z[0.45]) > max(z[0.15]), z


def test_count_equals_prediction_at_0_20_0_15(make_cfg, tmp_path):
    """A second point with no marginal term (e = 0.15, −0.15, ...): 1 + 0 outliers of W2."""
    assert all(abs(e) >= 0.15 - 1e-9 for e in theory.term_exponents(0.20, 0.15, 6))
    res = run_task(make_cfg, tmp_path, "law", "task.n_hidden=1000", "task.alpha1=0.2",
                   "task.alpha2=0.15")
    pm = res["paper_metrics"]
    assert pm["outliers_w2"] == pm["predicted_outliers_w2"] == 1


# ----------------------------------------------------------------------------- slow: the grid
GRID = [(0.25, 0.00), (0.25, 0.10), (0.25, 0.35), (0.20, 0.45), (0.30, 0.45), (0.35, 0.45)]
WIDTHS = (500, 1000, 2000, 4000)
GRID_SEEDS = (0, 1, 2)
SLOW_TIMEOUT = 5400  # the grid: 72 runs, about 40 minutes on one core (fixture of the first)


@pytest.fixture(scope="module")
def grid_results(tmp_path_factory) -> list[dict]:
    """Run the experiment two_step_gd/outlier_law in-process: GRID × WIDTHS × 3 seeds."""
    from conftest import compose_config

    base = tmp_path_factory.mktemp("grid")
    results = []
    for a1, a2 in GRID:
        for width in WIDTHS:
            for seed in GRID_SEEDS:
                cfg = compose_config(["task=two_step_gd", *QUIET, f"task.n_hidden={width}",
                                      f"task.alpha1={a1}", f"task.alpha2={a2}", f"seed={seed}"],
                                     base / f"g{a1}_{a2}_{width}_{seed}", base / "data")
                results.append(run(cfg))
    from tasks.two_step_gd.analysis import notes

    print(notes(summarize(results)))
    return results


def check_claim1_one_outlier(results: list[dict]) -> None:
    """Claim (i), count and growth: W1 has exactly one outlier in every run (α1 ≥ 0.2), and
    s1(ΔW1) grows like N^{α1} (fitted exponent within ±0.1 of α1, per grid point)."""
    summary = summarize(results)
    assert len(summary) == len(GRID) and len(results) == len(GRID) * len(WIDTHS) * len(GRID_SEEDS)
    assert all(r["paper_metrics"]["outliers_w1"] == 1 for r in results)
    assert np.allclose(summary["fit_dw1"], summary["alpha1"], atol=0.1), summary[
        ["alpha1", "alpha2", "fit_dw1"]]


def check_claim1_alignment(results: list[dict], width: int) -> None:
    """Claim (i), alignment band: |⟨v, β⟩| ≥ 0.5 for the W1 outlier at N = `width` (ie1),
    the mean over seeds of each α1 (W1 does not depend on α2)."""
    from tasks.two_step_gd.analysis import runs_table

    runs = runs_table(results)
    at = runs[runs["n_hidden"] == width].groupby("alpha1")["alignment_beta_w1"].mean()
    assert len(at) == len({a1 for a1, _ in GRID}), f"no runs at N = {width}"  # never vacuous
    assert (at >= 0.5).all(), at.to_dict()


def check_claim2_raw(results: list[dict]) -> None:
    """Claim (ii), per term: every |e_k| ≥ 0.15 passes on the raw exponent of s_{k+1}(ΔW2)."""
    from tasks.two_step_gd.analysis import verdict_table

    verdicts = verdict_table(summarize(results))
    scored = verdicts[verdicts["raw"] != "marginal"]
    assert len(scored) == 19, verdicts.to_string()  # the grid's terms with |e_k| >= 0.15
    assert (scored["raw"] == "pass").all(), scored.to_string()


def check_claim2_total(results: list[dict]) -> None:
    """Claim (ii), total: at (0.20, 0.45), the one grid point with no marginal term, the W2
    count equals 1 + ⌊α2/(1/2 − α1)⌋ = 2 in every seed at every width."""
    counts = {(r["params"]["n_hidden"], r["seed"]): r["paper_metrics"]["outliers_w2"]
              for r in results if (r["params"]["alpha1"], r["params"]["alpha2"]) == (0.2, 0.45)}
    assert counts and set(counts.values()) == {2}, counts


def check_claim3(results: list[dict]) -> None:
    """Claim (iii): the W2 count at the largest N (4000) is non-decreasing in α2 at fixed α1
    and in α1 at fixed α2 (mean over seeds)."""
    from tasks.two_step_gd.analysis import claim3

    steps = claim3(summarize(results))
    assert len(steps) == 4 and steps["ok"].all(), steps.to_string()


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
def test_claim1_one_outlier_of_w1_growing_like_n_alpha1(grid_results):
    check_claim1_one_outlier(grid_results)


def alignment_xfail(measured: str) -> pytest.MarkDecorator:
    """Return the strict xfail of the alignment band at a width where it fails."""
    return pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
        f"finding (README two_step_gd, claim (i)): |<v, beta>| of the W1 outlier, mean of "
        f"seeds 0-2 per alpha1 = 0.20, 0.25, 0.30, 0.35: {measured} < 0.5 (0.54 at N = 500 "
        f"and 0.51 at N = 2000 meet the band)"))


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
@pytest.mark.parametrize("width", [
    500, pytest.param(1000, marks=alignment_xfail("0.443, 0.443, 0.441, 0.439 at N = 1000")),
    2000, pytest.param(4000, marks=alignment_xfail("0.481, 0.479, 0.476, 0.474 at N = 4000"))])
def test_claim1_alignment_band(grid_results, width):
    check_claim1_alignment(grid_results, width)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README two_step_gd, claim (ii)): 5 of 19 scored terms pass on the raw exponents "
    "over N = 500-4000 (every fit is shifted up by the growth of the step-2 residual, "
    "N^0.17-0.38 for alpha1 = 0.20-0.35); divided by the residual 18 of 19 pass"))
def test_claim2_every_term_on_raw_exponents(grid_results):
    check_claim2_raw(grid_results)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README two_step_gd, claim (ii) total): at (0.20, 0.45) the W2 count is the "
    "predicted 2 in 9 of 12 runs, 3 at N = 2000 seed 1 and N = 4000 seeds 1 and 2 (third "
    "values 2.43, 2.81, 2.68 over bulk tops 2.33, 2.56, 2.50); mean 2.33 at N = 2000, 2.67 at "
    "N = 4000"))
def test_claim2_total_count_where_no_term_is_marginal(grid_results):
    check_claim2_total(grid_results)


@pytest.mark.slow
@pytest.mark.timeout(SLOW_TIMEOUT)
def test_claim3_count_non_decreasing_at_n4000(grid_results):
    check_claim3(grid_results)


def test_spectra_callback_shows_singular_spectra_over_the_two_steps(make_cfg, tmp_path):
    results = run(make_cfg(["task=two_step_gd", "task.n_hidden=128", "logger=csv",
                            "callbacks=spectra", "callbacks.matrix_spectrum.every_n_steps=1",
                            "callbacks.matrix_spectrum.budget_frac=null"], tmp_path / "cb"))
    run_dir = tmp_path / "cb"
    with np.load(run_dir / "spectra" / "matrices.npz") as m:
        assert list(m["W0__steps"]) == [0, 1, 2] and list(m["W1__steps"]) == [1, 2]
        assert list(m["W2__steps"]) == [2]
        w1 = m["W1"][-1]
        assert not np.iscomplexobj(w1) and np.all(np.diff(w1) <= 0)  # singular values
    edge = results["paper_metrics"]["bulk_edge_w1"]  # the top bulk value (gap rule)
    assert int((w1 > edge * (1 + 1e-6)).sum()) == results["paper_metrics"]["outliers_w1"] == 1
    with open(run_dir / "metrics.csv") as handle:
        header = handle.readline()
    assert "spectra/matrices/W1/outliers" in header
    assert (run_dir / "plots" / "matrices.png").is_file()
