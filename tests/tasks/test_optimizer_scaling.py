"""optimizer_scaling: data draw, update rules against closed forms, alpha fit, the paper's sign."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_SCALING
from runner.run import run
from runner.validation import ConfigError
from tasks.base.aggregate import fit_power_law
from tasks.optimizer_scaling import solvers
from tasks.optimizer_scaling.analysis import notes, summarize
from tasks.optimizer_scaling.config import Config
from tasks.optimizer_scaling.data import OptimizerScalingData, draw_problem


def small_problem(s=1.0, d=1024, n=2048, n_max=256, seed=0):
    return draw_problem(seed, s, d, n, n_max, n_outputs=1, noise_std=0.05)


def test_draw_has_the_stated_statistics():
    p = small_problem(d=512, n=4096, n_max=64)
    assert p["sigma_hat"].shape == (64, 64) and p["b_hat"].shape == (64, 1)
    assert torch.allclose(p["sigma_hat"], p["sigma_hat"].T)
    # population c = w*ᵀΛw* + σ² is the risk of a = 0; the empirical ĉ estimates it
    # (relative sd sqrt(2/n) = 2.2%: the tolerance is 4.5 sd)
    assert float(p["c_hat"][0]) == pytest.approx(float(p["c"][0]), rel=0.1)
    # Σ̂ estimates Σ = FΛFᵀ
    rel = (p["sigma_hat"] - p["sigma"]).norm() / p["sigma"].norm()
    assert rel < 0.15


def test_cached_draw_is_nested_and_built_once(tmp_path):
    base = dict(latent_dim=256, n_train=512, max_features=64)
    small = OptimizerScalingData(Config(n_features=16, **base), str(tmp_path), seed=3)
    large = OptimizerScalingData(Config(n_features=48, optimizer="adam", **base), str(tmp_path),
                                 seed=3)
    small.setup("fit")
    large.setup("fit")
    entries = list((tmp_path / "optimizer_scaling").glob("*.safetensors"))
    assert len(entries) == 1  # one draw serves every width and optimizer
    assert torch.equal(small.problem["sigma_hat"], large.problem["sigma_hat"][:16, :16])
    assert torch.equal(small.problem["b"], large.problem["b"][:16])
    other = OptimizerScalingData(Config(n_features=16, **base), str(tmp_path), seed=4)
    other.setup("fit")
    assert len(list((tmp_path / "optimizer_scaling").glob("*.safetensors"))) == 2
    assert not torch.equal(other.problem["sigma_hat"], small.problem["sigma_hat"])


def test_one_gd_step_is_eta_times_b_hat_by_hand():
    sigma = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    b = torch.tensor([[1.0], [-2.0]], dtype=torch.float64)
    eta = 0.3
    evals, evecs = torch.linalg.eigh(sigma)
    one = solvers.gd_closed_form(evals, evecs, b, eta, steps=1)
    assert torch.allclose(one, eta * b)  # a_1 = a_0 − η(Σ̂·0 − b̂) = ηb̂
    two = solvers.gd_closed_form(evals, evecs, b, eta, steps=2)
    a1 = eta * b
    assert torch.allclose(two, a1 - eta * (sigma @ a1 - b))


@pytest.mark.parametrize("optimizer", ["gd", "diag", "natural_gradient"])
def test_iterative_updates_match_the_closed_forms(make_cfg, tmp_path, optimizer):
    sizes = [*TINY_SCALING, "task.steps=25", "task.s=1.5", f"task.optimizer={optimizer}",
             "logger=csv"]
    iterative = run(make_cfg(sizes, tmp_path / "it"))
    closed = run(make_cfg([*sizes, "task.solver=closed_form"], tmp_path / "cf"))
    assert iterative["paper_metrics"]["test_loss"] == pytest.approx(
        closed["paper_metrics"]["test_loss"], rel=1e-9)
    assert iterative["paper_metrics"]["lr"] == pytest.approx(closed["paper_metrics"]["lr"])


def test_gd_step_size_is_one_over_the_top_eigenvalue(make_cfg, tmp_path):
    results = run(make_cfg([*TINY_SCALING, "logger=csv"], tmp_path / "r"))
    problem = OptimizerScalingData(Config(latent_dim=256, n_train=512, max_features=64,
                                          n_features=32), str(tmp_path / "d"), seed=0)
    problem.setup("fit")
    top = float(torch.linalg.eigvalsh(problem.problem["sigma_hat"])[-1])
    assert results["paper_metrics"]["lr"] == pytest.approx(1.0 / top, rel=1e-8)


def test_summarize_recovers_a_known_exponent():
    widths = [64, 128, 256, 512]
    results = []
    for seed, alpha in [(0, 0.30), (1, 0.34)]:
        for n in widths:
            results.append({"status": "completed", "seed": seed, "params": {
                "optimizer": "natural_gradient", "s": 1.0, "steps": 50, "n_features": n},
                "paper_metrics": {"test_loss": 3.0 * n ** -alpha}})
    results.append({"status": "failed", "seed": 2, "paper_metrics": {}})
    table = summarize(results)
    row = table.iloc[0]
    assert row["alpha"] == pytest.approx(0.32, abs=1e-12)
    assert row["alpha_sd"] == pytest.approx(np.std([0.30, 0.34], ddof=1), abs=1e-12)
    assert row["n_seeds"] == 2 and row["alpha_paper"] == 0.31
    assert fit_power_law(np.array(widths), 2.0 * np.array(widths, float) ** -0.5) == \
        pytest.approx(-0.5)


def test_a_sweep_with_one_width_summarizes_to_an_empty_table_and_no_notes():
    results = [{"status": "completed", "seed": 0, "params": {
        "optimizer": opt, "s": 1.0, "steps": 10, "n_features": 32},
        "paper_metrics": {"test_loss": 1.0}} for opt in ("gd", "natural_gradient")]
    table = summarize(results)
    assert table.empty and list(table.columns[:3]) == ["optimizer", "s", "steps"]
    assert notes(table) == ""


def test_natural_gradient_scales_faster_than_gd_at_s_1():
    """The paper's direction on a small grid: alpha_NG > alpha_GD at s = 1 (closed forms)."""
    p = small_problem(s=1.0, d=1024, n=2048, n_max=256)
    widths = [32, 64, 128, 256]
    losses = {"gd": [], "natural_gradient": []}
    for n in widths:
        sig, b = p["sigma_hat"][:n, :n], p["b_hat"][:n]
        evals, evecs = torch.linalg.eigh(sig)
        a_gd = solvers.gd_closed_form(evals, evecs, b, 1.0 / float(evals[-1]), 50)
        a_ng = solvers.ng_closed_form(evals, evecs, b, 1e-8, 50)
        for name, a in (("gd", a_gd), ("natural_gradient", a_ng)):
            losses[name].append(float(solvers.quadratic_loss(
                a, p["sigma"][:n, :n], p["b"][:n], p["c"])))
    alpha = {k: -fit_power_law(widths, v) for k, v in losses.items()}
    assert alpha["natural_gradient"] > alpha["gd"] > 0
    assert all(np.diff(losses["natural_gradient"]) < 0)  # more features, lower loss


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="task.n_features=4096 exceeds task.max_features"):
        Config(n_features=4096)
    with pytest.raises(ConfigError, match=r"task.optimizer \(with task.solver=closed_form\)"):
        Config(optimizer="adam", solver="closed_form")
    with pytest.raises(ConfigError, match="task.s=0"):
        Config(s=0)


def closed_form_alphas(seeds, s_values, d=4096, n=8192, widths=(64, 128, 256, 512, 1024, 2048),
                       steps=50, eps=1e-8):
    """Return {(optimizer, s): [alpha per seed]} for gd and natural_gradient (closed forms)."""
    out = {}
    for seed in seeds:
        for s in s_values:
            p = draw_problem(seed, s, d, n, max(widths), n_outputs=1, noise_std=0.05)
            losses = {"gd": [], "natural_gradient": []}
            for width in widths:
                sig, b = p["sigma_hat"][:width, :width], p["b_hat"][:width]
                evals, evecs = torch.linalg.eigh(sig)
                fits = {"gd": solvers.gd_closed_form(evals, evecs, b, 1 / float(evals[-1]), steps),
                        "natural_gradient": solvers.ng_closed_form(evals, evecs, b, eps, steps)}
                for name, a in fits.items():
                    losses[name].append(float(solvers.quadratic_loss(
                        a, p["sigma"][:width, :width], p["b"][:width], p["c"])))
            for name, curve in losses.items():
                out.setdefault((name, s), []).append(
                    -fit_power_law(widths, curve))
    return out


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_paper_claims_1_and_3_over_five_seeds():
    """Claim 1 (s = 1: alpha_NG in [0.25, 0.37], alpha_GD in [0.08, 0.17], ratio >= 2) and
    claim 3 (Δalpha grows from s = 0.5 to 1.5, Δalpha(2) >= 0.8 Δalpha(1.5)), means of 5 seeds,
    at the paper's size (D = 4096, n = 8192, N = 64..2048, T = 50). About 20 minutes."""
    s_values = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    alphas = closed_form_alphas(range(5), s_values)
    mean = {k: float(np.mean(v)) for k, v in alphas.items()}
    for s in s_values:
        print(f"s={s}: gd {mean[('gd', s)]:.3f} ng {mean[('natural_gradient', s)]:.3f}")
    gd, ng = mean[("gd", 1.0)], mean[("natural_gradient", 1.0)]
    assert 0.25 <= ng <= 0.37
    assert 0.08 <= gd <= 0.17
    assert ng / gd >= 2
    delta = [mean[("natural_gradient", s)] - mean[("gd", s)] for s in s_values]
    assert all(np.diff(delta[:5]) > 0)  # 0.5 -> 1.5
    assert delta[5] >= 0.8 * delta[4]
