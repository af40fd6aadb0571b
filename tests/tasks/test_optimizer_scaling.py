"""optimizer_scaling: data draw, update rules against closed forms and dense references, the lr
choice on the validation split, the alpha fit, the paper's claims 1 (direction) and 2 (the
ordering of the five optimizers at s >= 1) at a small size; claims 1-3 at the paper's size (slow).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_SCALING
from runner.run import run
from runner.validation import ConfigError
from tasks.base.aggregate import fit_power_law
from tasks.optimizer_scaling import solvers
from tasks.optimizer_scaling.analysis import TIE, notes, ordering, summarize
from tasks.optimizer_scaling.config import Config
from tasks.optimizer_scaling.data import OptimizerScalingData, draw_problem, restrict
from tasks.optimizer_scaling.module import train

OPTIMIZERS = ("gd", "diag", "adam", "matrix_sign", "natural_gradient")
F64 = torch.float64


def small_problem(s=1.0, d=1024, n=2048, n_max=256, seed=0, m=1, n_val=512):
    return draw_problem(seed, s, d, n, n_max, n_outputs=m, noise_std=0.05, n_val=n_val)


def known_spd(evals, seed=0) -> torch.Tensor:
    """Return Q diag(evals) Qᵀ for a random orthogonal Q (a matrix with a known spectrum)."""
    q, _ = torch.linalg.qr(torch.randn(len(evals), len(evals), generator=torch.Generator()
                                       .manual_seed(seed), dtype=F64))
    return q @ torch.diag(torch.as_tensor(evals, dtype=F64)) @ q.T


# ------------------------------------------------------------------------------------- the draw
def test_draw_has_the_stated_statistics():
    p = small_problem(d=512, n=4096, n_max=64, n_val=1024)
    assert p["sigma_hat"].shape == (64, 64) and p["b_hat"].shape == (64, 1)
    assert p["sigma_val"].shape == (64, 64) and p["b_val"].shape == (64, 1)
    # population c = w*ᵀΛw* + σ² is the risk of a = 0; the empirical ĉ estimates it
    # (relative sd sqrt(2/n) = 2.2%: the tolerance is 4.5 sd)
    assert float(p["c_hat"][0]) == pytest.approx(float(p["c"][0]), rel=0.1)
    # tr Σ = Σ_k λ_k ‖F_:k‖², E = N·Σ_k k^-s / D with F_ij ~ N(0, 1/D) (relative sd 3.3% here)
    expected_trace = 64 * float(torch.arange(1, 513, dtype=F64).pow(-1.0).sum()) / 512
    assert float(p["sigma"].trace()) == pytest.approx(expected_trace, rel=0.15)
    # Σ̂ and Σ̂_val estimate Σ = FΛFᵀ from n and n_val independent samples: the Frobenius error
    # scales as 1/sqrt(samples), so the ratio is sqrt(n / n_val) = 2
    err = {k: float((p[k] - p["sigma"]).norm() / p["sigma"].norm()) for k in ("sigma_hat",
                                                                              "sigma_val")}
    assert err["sigma_hat"] < 0.15
    assert err["sigma_val"] / err["sigma_hat"] == pytest.approx(2.0, rel=0.25)
    gap = float((p["sigma_val"] - p["sigma_hat"]).norm() / p["sigma"].norm())
    assert gap > 0.5 * err["sigma_val"]  # distinct samples, not a copy of the training set


def test_population_spectrum_follows_k_to_the_minus_s():
    """The top of the spectrum of Σ = FΛFᵀ falls as k^-s (the spec's "Spectra to watch"): at
    s = 2 the log-log slope of λ_1..16 is −2.05, −2.05, −1.97 for seeds 0, 1, 2."""
    for seed in range(3):
        p = small_problem(s=2.0, d=512, n=256, n_max=64, seed=seed, n_val=16)
        top = torch.linalg.eigvalsh(p["sigma"]).flip(0)[:16]
        assert fit_power_law(np.arange(1, 17), top.numpy()) == pytest.approx(-2.0, abs=0.15)


def test_training_statistics_do_not_depend_on_n_val():
    few, many = small_problem(d=256, n=512, n_max=32, n_val=16), small_problem(
        d=256, n=512, n_max=32, n_val=64)
    for key in ("sigma_hat", "b_hat", "c_hat", "sigma", "b", "c"):
        assert torch.equal(few[key], many[key]), key
    assert not torch.equal(few["sigma_val"], many["sigma_val"])


def test_cached_draw_is_nested_and_built_once(tmp_path):
    base = dict(latent_dim=256, n_train=512, n_val=128, max_features=64)
    small = OptimizerScalingData(Config(n_features=16, **base), str(tmp_path), seed=3)
    large = OptimizerScalingData(Config(n_features=48, optimizer="adam", **base), str(tmp_path),
                                 seed=3)
    small.setup("fit")
    large.setup("fit")
    entries = list((tmp_path / "optimizer_scaling").glob("*.safetensors"))
    assert len(entries) == 1  # one draw serves every width and optimizer
    for key in ("sigma_hat", "sigma_val", "sigma"):
        assert torch.equal(small.problem[key], large.problem[key][:16, :16])
    assert torch.equal(small.problem["b"], large.problem["b"][:16])
    other = OptimizerScalingData(Config(n_features=16, **base), str(tmp_path), seed=4)
    other.setup("fit")
    assert len(list((tmp_path / "optimizer_scaling").glob("*.safetensors"))) == 2
    assert not torch.equal(other.problem["sigma_hat"], small.problem["sigma_hat"])


# --------------------------------------------------------------------- closed forms and rules
def test_one_gd_step_is_eta_times_b_hat_by_hand():
    sigma = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    b = torch.tensor([[1.0], [-2.0]], dtype=F64)
    eta = 0.3
    evals, evecs = torch.linalg.eigh(sigma)
    one = solvers.gd_closed_form(evals, evecs, b, eta, steps=1)
    assert torch.allclose(one, eta * b)  # a_1 = a_0 − η(Σ̂·0 − b̂) = ηb̂
    two = solvers.gd_closed_form(evals, evecs, b, eta, steps=2)
    a1 = eta * b
    assert torch.allclose(two, a1 - eta * (sigma @ a1 - b))


def dense_iteration(rule: str, sigma: torch.Tensor, b: torch.Tensor, steps: int, eta: float,
                    eps: float) -> torch.Tensor:
    """Return a_T of the rule iterated with dense matrices (the independent reference):
    gd a ← a − η(Σa − b), diag a ← a − ηD⁻¹(Σa − b), NG a ← a − (Σ + εI)⁻¹(Σa − b)."""
    a = torch.zeros_like(b)
    eye = torch.eye(len(sigma), dtype=F64)
    for _ in range(steps):
        g = sigma @ a - b
        if rule == "gd":
            a = a - eta * g
        elif rule == "diag":
            a = a - eta * torch.linalg.solve(torch.diag(sigma.diagonal()), g)
        else:
            a = a - torch.linalg.solve(sigma + eps * eye, g)
    return a


@pytest.mark.parametrize("rule", ["gd", "diag", "natural_gradient"])
def test_closed_forms_equal_the_dense_iteration(rule):
    """T = 7 steps with ε = 0.5 (comparable to the eigenvalues, so NG's filter (1 − (ε/(λ+ε))^T)/λ
    still depends on T and ε) and a non-unit diagonal: an off-by-one in T, a dropped ε or a
    dropped D^{-1/2} changes a_T by far more than the tolerance."""
    sigma = known_spd([3.0, 1.0, 0.3, 0.1, 0.02], seed=1) + torch.diag(
        torch.tensor([0.5, 0.0, 1.0, 0.0, 2.0], dtype=F64))
    b = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    steps, eps, eta = 7, 0.5, 0.2
    expected = dense_iteration(rule, sigma, b, steps, eta, eps)
    if rule == "diag":
        got = solvers.diag_closed_form(sigma, b, eta, steps)
    else:
        evals, evecs = torch.linalg.eigh(sigma)
        got = (solvers.gd_closed_form(evals, evecs, b, eta, steps) if rule == "gd" else
               solvers.ng_closed_form(evals, evecs, b, eps, steps))
    assert torch.allclose(got, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(expected, dense_iteration(rule, sigma, b, steps - 1, eta, eps),
                              rtol=1e-3)  # T matters at this size


def test_polar_factor_and_schedule_against_independent_formulas():
    g = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    evals, evecs = torch.linalg.eigh(g.T @ g)
    inv_sqrt = evecs @ torch.diag(evals.rsqrt()) @ evecs.T
    assert torch.allclose(solvers.polar_factor(g), g @ inv_sqrt)  # UVᵀ = G(GᵀG)^{-1/2}
    col = g[:, :1]
    assert torch.allclose(solvers.polar_factor(col), col / col.norm())  # N×1: g/‖g‖
    assert torch.equal(solvers.polar_factor(torch.zeros(4, 2, dtype=F64)), torch.zeros(4, 2))
    assert [solvers.linear_decay(2.0, t, 4) for t in range(5)] == [2.0, 1.5, 1.0, 0.5, 0.0]
    rate = torch.tensor([0.5, 0.1], dtype=F64)
    assert torch.allclose(solvers.learned_fraction(rate, 3), 1 - (1 - rate) ** 3)


def test_null_mode_step_limit_diag_scaling_and_loss_per_output_by_hand():
    """Σ = diag(0, 2), b = (1, 1), η = 0.25, T = 3: GD leaves the λ = 0 mode at ηTb = 0.75 (its
    gradient stays −b) and the λ = 2 mode at (1 − (1 − 0.5)³)/2 = 0.4375, as the dense iteration.
    ηλ a hair above 1 (η = 1/λ_max from Lanczos) solves the mode in one step, b/λ, not NaN.
    D^{-1/2}ΣD^{-1/2} of [[4, 2], [2, 9]] is [[1, 1/3], [1/3, 1]]. The loss is the mean over
    outputs of c − 2aᵀb + aᵀΣa: a = I, Σ = I, b = [[1, 2], [3, 4]], c = (5, 6) give 4 and −1."""
    sigma = torch.diag(torch.tensor([0.0, 2.0], dtype=F64))
    b = torch.ones(2, 1, dtype=F64)
    evals, evecs = torch.linalg.eigh(sigma)
    got = solvers.gd_closed_form(evals, evecs, b, 0.25, 3)
    assert torch.allclose(got, torch.tensor([[0.75], [0.4375]], dtype=F64), rtol=1e-12)
    assert torch.allclose(got, dense_iteration("gd", sigma, b, 3, 0.25, 0.0), rtol=1e-12)
    # NG on the same Σ with ε = 0.5: the λ = 0 mode gains b/ε per step, T/ε = 6 after 3 steps;
    # the λ = 2 mode (1 − (0.5/2.5)³)/2 = 0.496
    ng = solvers.ng_closed_form(evals, evecs, b, 0.5, 3)
    assert torch.allclose(ng, torch.tensor([[6.0], [0.496]], dtype=F64), rtol=1e-12)
    assert torch.allclose(ng, dense_iteration("natural_gradient", sigma, b, 3, 0.0, 0.5),
                          rtol=1e-12)
    lam = torch.tensor([2.0], dtype=F64)
    one = solvers.gd_closed_form(lam, torch.ones(1, 1, dtype=F64), b[:1], (1 + 1e-12) / 2.0, 4)
    assert torch.allclose(one, b[:1] / 2.0, rtol=1e-9)
    pre = solvers.diag_preconditioned(torch.tensor([[4.0, 2.0], [2.0, 9.0]], dtype=F64))
    assert torch.allclose(pre, torch.tensor([[1.0, 1 / 3], [1 / 3, 1.0]], dtype=F64))
    loss = solvers.quadratic_loss(torch.eye(2, dtype=F64), torch.eye(2, dtype=F64),
                                  torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64),
                                  torch.tensor([5.0, 6.0], dtype=F64))
    assert float(loss) == pytest.approx(1.5)


def one_feature_problem(b_val: float = 1.0) -> dict[str, torch.Tensor]:
    """Return a hand-made problem with N = m = 1: Σ̂ = Σ = Σ̂_val = 1, b̂ = b = 1, c = 1, and
    the given b_val (the risk of a is c − 2ab + a²)."""
    one = torch.ones(1, 1, dtype=F64)
    return {"sigma_hat": one, "b_hat": one, "c_hat": torch.ones(1, dtype=F64),
            "sigma_val": one, "b_val": b_val * one, "c_val": torch.ones(1, dtype=F64),
            "sigma": one, "b": one, "c": torch.ones(1, dtype=F64)}


def test_lr_is_chosen_on_the_validation_loss_not_the_test_loss():
    """Adam's first step is lr·sign(g) = lr here: a_1 ∈ {0.1, 1.0}. The test risk (1 − a)² picks
    lr = 1 (loss 0); the validation risk with b_val = 0, 1 + a², picks lr = 0.1."""
    cfg = Config(optimizer="adam", n_features=1, steps=1, lr_grid=[0.1, 1.0])
    metrics = train(cfg, one_feature_problem(b_val=0.0)).paper_metrics()
    assert metrics["lr"] == 0.1 and metrics["lr_oracle"] == 1.0
    assert metrics["test_loss"] == pytest.approx(0.81) and metrics["val_loss"] == pytest.approx(1.01)
    # (Adam's ε = 1e-8 shortens the step by a relative 1e-8)
    assert metrics["test_loss_oracle"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["test_loss_per_lr"] == pytest.approx([0.81, 0.0], abs=1e-6)


def test_matrix_sign_steps_downhill_along_the_polar_factor():
    """From a = 0 the gradient is −b̂, so one step is a_1 = lr0·polar(b̂) (= lr0·b̂/‖b̂‖ for
    m = 1, b̂(b̂ᵀb̂)^{-1/2} for m = 3); the second uses lr0·(1 − 1/T). Over T steps every copy
    lowers the training loss below its value at a = 0."""
    for m in (1, 3):
        p = restrict(small_problem(d=256, n=512, n_max=32, m=m, n_val=64), 32)
        b = p["b_hat"]
        evals, evecs = torch.linalg.eigh(b.T @ b)
        polar_b = b @ evecs @ torch.diag(evals.rsqrt()) @ evecs.T
        cfg = dict(optimizer="matrix_sign", n_features=32, n_outputs=m, latent_dim=256,
                   n_train=512, n_val=64, max_features=32, sign_lr_grid=[0.5, 0.05])
        first = train(Config(steps=1, **cfg), p)
        assert torch.allclose(first.readouts[0], 0.5 * polar_b)
        assert torch.allclose(first.readouts[1], 0.05 * polar_b)
        second = train(Config(steps=2, **cfg), p)
        a1 = 0.5 * polar_b
        g1 = p["sigma_hat"] @ a1 - b
        assert torch.allclose(second.readouts[0], a1 - 0.5 * 0.5 * solvers.polar_factor(g1))
        full = train(Config(steps=20, **cfg), p)
        train_loss = full.losses()[0]
        assert bool((train_loss < p["c_hat"].mean()).all())


def test_adam_first_step_is_lr_times_the_gradient_sign():
    """Adam's first step from 0 (bias-corrected m̂ = g, v̂ = g², g = −b̂) is a_1 = lr·b̂/(|b̂| + ε),
    the sign of b̂ up to ε = 1e-8."""
    p = restrict(small_problem(d=256, n=512, n_max=32, n_val=64), 32)
    cfg = Config(optimizer="adam", n_features=32, steps=1, latent_dim=256, n_train=512, n_val=64,
                 max_features=32, lr_grid=[0.01, 0.3])
    module = train(cfg, p)
    for a, lr in zip(module.readouts, cfg.lr_grid):
        b = p["b_hat"]
        assert torch.allclose(a, lr * b / (b.abs() + 1e-8), rtol=1e-12)


@pytest.mark.parametrize("optimizer", ["gd", "diag", "natural_gradient"])
def test_iterative_updates_match_the_closed_forms(make_cfg, tmp_path, optimizer):
    """The module's T iterative updates (through the Trainer) land on the eigenbasis closed form;
    the step size is η = 1/λ_max of Σ̂ (gd) or of D^{-1/2}Σ̂D^{-1/2} (diag) by a dense eigvalsh,
    independent of the module's Lanczos; NG takes unit steps and reports no lr."""
    sizes = [*TINY_SCALING, "task.steps=25", "task.s=1.5", f"task.optimizer={optimizer}",
             "logger=csv"]
    iterative = run(make_cfg(sizes, tmp_path / "it"))
    closed = run(make_cfg([*sizes, "task.solver=closed_form"], tmp_path / "cf"))
    assert iterative["paper_metrics"]["test_loss"] == pytest.approx(
        closed["paper_metrics"]["test_loss"], rel=1e-9)
    data = OptimizerScalingData(Config(latent_dim=256, n_train=512, max_features=64, s=1.5,
                                       n_features=32), str(tmp_path / "d"), seed=0)
    data.setup("fit")
    sig = data.problem["sigma_hat"]
    scale = sig.diagonal().rsqrt()
    matrix = {"gd": sig, "diag": scale[:, None] * sig * scale[None, :]}.get(optimizer)
    for result in (iterative, closed):
        lr = result["paper_metrics"]["lr"]
        if matrix is None:
            assert lr is None
        else:
            assert lr == pytest.approx(1.0 / float(torch.linalg.eigvalsh(matrix)[-1]), rel=1e-8)


# ------------------------------------------------------------------------------- aggregation
def planted_results(alphas_by_seed: dict[int, tuple[float, float]], widths=(64, 128, 256, 512),
                    optimizer: str = "adam") -> list[dict]:
    """Return results whose two lr copies follow L = 3·N^-a0 (lowest validation loss: the
    chosen one) and L = 2·N^-a1 (lowest test loss: the oracle), per seed."""
    results = []
    for seed, (a0, a1) in alphas_by_seed.items():
        for n in widths:
            test = [3.0 * n ** -a0, 2.0 * n ** -a1]
            results.append({"status": "completed", "seed": seed, "params": {
                "optimizer": optimizer, "s": 1.0, "steps": 50, "n_outputs": 1, "n_features": n,
                "lr_grid": [0.1, 0.3], "sign_lr_grid": [1.0]},
                "paper_metrics": {"test_loss": test[0], "test_loss_oracle": test[1],
                                  "val_loss_per_lr": [1.0, 2.0], "test_loss_per_lr": test}})
    return results


def test_summarize_recovers_known_exponents_for_each_lr_choice():
    results = planted_results({0: (0.30, 0.50), 1: (0.34, 0.54)})
    results.append({"status": "failed", "seed": 2, "paper_metrics": {}})
    row = summarize(results).iloc[0]
    assert row["alpha"] == pytest.approx(0.32, abs=1e-12)
    assert row["alpha_sd"] == pytest.approx(np.std([0.30, 0.34], ddof=1), abs=1e-12)
    assert row["alpha_oracle"] == pytest.approx(0.52, abs=1e-12)
    # the narrow grid (the spec's 3e-3..0.1) holds only lr 0.1, copy 0: its exponent
    assert row["alpha_narrow_test"] == pytest.approx(0.32, abs=1e-12)
    assert row["edge_frac"] == 1.0  # copy 0 is the smallest lr of a 2-lr grid
    assert row["n_seeds"] == 2 and row["n_outputs"] == 1
    assert fit_power_law(np.array([64, 128]), 2.0 * np.array([64, 128.0]) ** -0.5) == \
        pytest.approx(-0.5)


def test_summarize_reads_results_without_the_new_keys_and_the_ordering_table():
    old = [{"status": "completed", "seed": 0, "params": {
        "optimizer": opt, "s": 1.0, "steps": 50, "n_features": n},
        "paper_metrics": {"test_loss": c * n ** -a}} for opt, c, a in
        (("gd", 1.0, 0.1), ("diag", 1.0, 0.15), ("adam", 1.0, 0.3),
         ("matrix_sign", 1.0, 0.2), ("natural_gradient", 1.0, 0.29)) for n in (64, 256)]
    table = summarize(old)
    assert list(table["optimizer"]) == list(OPTIMIZERS) and (table["n_outputs"] == 1).all()
    order = ordering(table).iloc[0]
    assert order["diag-gd"] == pytest.approx(0.05)
    assert order["natural_gradient-adam"] == pytest.approx(-0.01)
    assert bool(order["holds"])  # −0.01 is a tie within TIE = 0.02
    assert "Claim 2" in notes(table)


def test_a_sweep_with_one_width_summarizes_to_an_empty_table_and_no_notes():
    results = [{"status": "completed", "seed": 0, "params": {
        "optimizer": opt, "s": 1.0, "steps": 10, "n_features": 32},
        "paper_metrics": {"test_loss": 1.0}} for opt in ("gd", "natural_gradient")]
    table = summarize(results)
    assert table.empty and list(table.columns[:3]) == ["optimizer", "s", "steps"]
    assert notes(table) == ""


def test_config_rejects_impossible_values():
    with pytest.raises(ConfigError, match="task.n_features=4096 exceeds task.max_features"):
        Config(n_features=4096)
    with pytest.raises(ConfigError, match=r"task.optimizer \(with task.solver=closed_form\)"):
        Config(optimizer="adam", solver="closed_form")
    with pytest.raises(ConfigError, match="task.s=0"):
        Config(s=0)
    with pytest.raises(ConfigError, match="task.n_val=0"):
        Config(n_val=0)


# -------------------------------------------------------------------- the claims, small size
def test_natural_gradient_scales_faster_than_gd_at_s_1():
    """Claim 1's direction on a small grid: alpha_NG > alpha_GD at s = 1 (closed forms)."""
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


CLAIM_SIZE = dict(latent_dim=1024, n_train=2048, n_val=512, max_features=256)
CLAIM_WIDTHS = (32, 64, 128, 256)
CLAIM_SEEDS = (0, 1, 2)


@functools.cache
def claim_alphas(s: float, m: int, seeds: tuple[int, ...] = CLAIM_SEEDS) -> dict[str, np.ndarray]:
    """Return {optimizer: alpha per seed} at the claim size (D = 1024, n = 2048, n_val = 512,
    N ∈ {32, ..., 256}, T = 50), every optimizer run by `module.train` (the module's own set-up
    and update code, Adam's and matrix_sign's lr chosen on the validation split)."""
    out = {opt: [] for opt in OPTIMIZERS}
    for seed in seeds:
        p = draw_problem(seed, s, CLAIM_SIZE["latent_dim"], CLAIM_SIZE["n_train"],
                         CLAIM_SIZE["max_features"], m, 0.05, CLAIM_SIZE["n_val"])
        for opt in OPTIMIZERS:
            losses = [train(Config(optimizer=opt, n_features=w, s=s, n_outputs=m, **CLAIM_SIZE),
                            restrict(p, w)).paper_metrics()["test_loss"] for w in CLAIM_WIDTHS]
            out[opt].append(-fit_power_law(CLAIM_WIDTHS, losses))
    return {k: np.array(v) for k, v in out.items()}


LINKS = [("gd", "diag"), ("diag", "adam"), ("diag", "matrix_sign"), ("adam", "natural_gradient"),
         ("matrix_sign", "natural_gradient")]
# sd over seeds 0-9 of the seed-paired difference alpha_upper − alpha_lower at the claim size, per
# (s, m) and link (claim_alphas(s, m, tuple(range(10))); the slow test_claim_spread_constants
# recomputes them). The fast tests take the mean over CLAIM_SEEDS, whose standard error is
# sd/sqrt(3), and ask for a margin of 3 standard errors.
CLAIM_SPREAD = {
    (1.0, 1): dict(zip(LINKS, (0.0026, 0.0111, 0.0078, 0.0044, 0.0025))),
    (1.5, 1): dict(zip(LINKS, (0.0193, 0.0297, 0.0512, 0.0198, 0.0248))),
    (1.5, 8): dict(zip(LINKS, (0.0086, 0.0183, 0.0192, 0.0122, 0.0081))),
}


def claim_margin(s: float, m: int, link: tuple[str, str]) -> tuple[float, float]:
    """Return (mean over CLAIM_SEEDS of alpha_upper − alpha_lower, 3 standard errors of it)."""
    alphas = claim_alphas(s, m)
    diff = float(np.mean(alphas[link[1]] - alphas[link[0]]))
    return diff, 3 * CLAIM_SPREAD[(s, m)][link] / np.sqrt(len(CLAIM_SEEDS))


def link_id(link: tuple[str, str]) -> str:
    return f"{link[0]}<={link[1]}"


@pytest.mark.parametrize("m", [1, 8])
@pytest.mark.parametrize("link", LINKS, ids=link_id)
def test_claim_2_ordering_is_strict_at_s_1_5(link, m):
    """Claim 2, GD ≤ diag ≤ {adam, matrix_sign} ≤ NG, one link per test, at s = 1.5 on the claim
    size (D = 1024, n = 2048, N = 32..256; about 30 s for all claim tests together): the mean
    over seeds 0-2 of alpha_upper − alpha_lower exceeds 3 standard errors of seed noise (a
    real gap, not a tie). Over seeds 0-9 the differences are, m = 1: diag−gd 0.063 ± 0.019,
    adam−diag 0.155 ± 0.030, matrix_sign−diag 0.128 ± 0.051, NG−adam 0.147 ± 0.020,
    NG−matrix_sign 0.174 ± 0.025; m = 8: 0.064 ± 0.009, 0.171 ± 0.018, 0.274 ± 0.019,
    0.142 ± 0.012, 0.039 ± 0.008 (mean ± sd)."""
    diff, margin = claim_margin(1.5, m, link)
    assert diff > margin, f"{link_id(link)} at s = 1.5, m = {m}: {diff:.4f} <= {margin:.4f}"


@pytest.mark.parametrize("link", LINKS, ids=link_id)
def test_claim_2_ordering_holds_with_the_spec_s_ties_at_s_1(link):
    """Claim 2 as the spec states it (ties within 0.02 allowed) at s = 1, m = 1: the mean over
    seeds 0-2 of alpha_upper − alpha_lower is above −0.02 by 3 standard errors of seed noise.
    Over seeds 0-9: diag−gd 0.0074 ± 0.0026, adam−diag 0.023 ± 0.011, matrix_sign−diag
    0.025 ± 0.008, NG−adam −0.0024 ± 0.0044, NG−matrix_sign −0.0045 ± 0.0025."""
    diff, margin = claim_margin(1.0, 1, link)
    assert diff > -TIE + margin, f"{link_id(link)} at s = 1: {diff:.4f} <= {-TIE + margin:.4f}"


S1_STRICT_FAILS = {
    ("diag", "adam"): "seeds 0-2: adam−diag = 0.0170, under 3 SE = 0.0191 (seeds 0-9: 0.023 ± "
                      "0.011): at s = 1, m = 1 Adam's gap over diag is within 3 SE",
    ("adam", "natural_gradient"): "seeds 0-2: NG−adam = −0.0001 (seeds 0-9: −0.0024 ± 0.0044): "
                                  "at s = 1 NG ties Adam at this size (a tie, not a gap)",
    ("matrix_sign", "natural_gradient"): "seeds 0-2: NG−matrix_sign = −0.0042 (seeds 0-9: "
                                         "−0.0045 ± 0.0025): at s = 1 matrix_sign ties or "
                                         "slightly beats NG at this size",
}


@pytest.mark.parametrize("link", [
    pytest.param(link, id=link_id(link), marks=pytest.mark.xfail(
        strict=True, raises=AssertionError, reason=S1_STRICT_FAILS[link]))
    if link in S1_STRICT_FAILS else pytest.param(link, id=link_id(link)) for link in LINKS])
def test_claim_2_ordering_is_strict_at_s_1(link):
    """The strict reading of claim 2 at s = 1, m = 1 (a gap of 3 standard errors, no tie): holds
    for gd < diag and diag < matrix_sign; the other three links are ties at this size (strict
    xfails with the measured numbers)."""
    diff, margin = claim_margin(1.0, 1, link)
    assert diff > margin, f"{link_id(link)} at s = 1: {diff:.4f} <= {margin:.4f}"


# ---------------------------------------------------------------- the claims, the paper's size
def closed_form_alphas(seeds, s_values, d=4096, n=8192, widths=(64, 128, 256, 512, 1024, 2048),
                       steps=50, eps=1e-8):
    """Return {(optimizer, s): [alpha per seed]} for gd and natural_gradient (closed forms)."""
    out = {}
    for seed in seeds:
        for s in s_values:
            p = draw_problem(seed, s, d, n, max(widths), n_outputs=1, noise_std=0.05, n_val=1)
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
    at the paper's size (D = 4096, n = 8192, N = 64..2048, T = 50). About 6-20 minutes."""
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


PAPER_S = (1.0, 1.25, 1.5, 2.0)
PAPER_WIDTHS = (64, 128, 256, 512, 1024, 2048)


@functools.cache
def paper_size_summary(m: int):
    """Return summarize() of the alpha table at m outputs for s >= 1 (5 seeds, paper size): the
    optimizer_scaling runs under the sweep folders in $OPTIMIZER_SCALING_SWEEP_DIRS (separated
    by os.pathsep, e.g. multirun/optimizer_scaling/alpha_table) when set, otherwise computed
    here with `module.train` (≈ 10 min for m = 1, 20 for m = 8 on one core)."""
    from runner.report import load_results
    from tasks.base.contract import resolved_params

    sweeps = os.environ.get("OPTIMIZER_SCALING_SWEEP_DIRS")
    if sweeps:
        results = [r for d in sweeps.split(os.pathsep) for r in load_results(Path(d))
                   if r.get("task") == "optimizer_scaling"]
    else:
        results = []
        for seed in range(5):
            for s in PAPER_S:
                p = draw_problem(seed, s, 4096, 8192, 2048, m, 0.05, 2048)
                for opt in OPTIMIZERS:
                    for width in PAPER_WIDTHS:
                        cfg = Config(optimizer=opt, n_features=width, s=s, n_outputs=m)
                        results.append({"status": "completed", "seed": seed,
                                        "params": resolved_params(cfg), "paper_metrics":
                                        train(cfg, restrict(p, width)).paper_metrics()})
    table = summarize(results)
    table = table[(table["n_outputs"] == m) & (table["s"] >= 1) & (table["steps"] == 50)]
    print(table[["optimizer", "s", "alpha", "alpha_sd"]].to_string())
    return table


PAPER_ORDER_FAILS: dict[tuple[int, tuple[str, str]], str] = {}


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.parametrize(("m", "link"), [
    pytest.param(m, link, id=f"m{m}-{link_id(link)}", marks=pytest.mark.xfail(
        strict=True, raises=AssertionError, reason=PAPER_ORDER_FAILS[(m, link)]))
    if (m, link) in PAPER_ORDER_FAILS else pytest.param(m, link, id=f"m{m}-{link_id(link)}")
    for m in (1, 8) for link in LINKS])
def test_paper_claim_2_ordering_at_s_ge_1(m, link):
    """Claim 2 at the paper's size (D = 4096, n = 8192, N = 64..2048, T = 50, 5 seeds), one
    link per test: alpha_upper − alpha_lower ≥ −0.02 (the spec's ties) at every s ≥ 1."""
    order = ordering(paper_size_summary(m))
    diffs = order[f"{link[1]}-{link[0]}"]
    assert len(diffs) == len(PAPER_S)
    assert (diffs >= -TIE).all(), dict(zip(order["s"], diffs.round(4)))


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_claim_spread_constants():
    """CLAIM_SPREAD is the sd over seeds 0-9 of each link's seed-paired difference (≈ 3 min)."""
    for (s, m), spread in CLAIM_SPREAD.items():
        alphas = claim_alphas(s, m, tuple(range(10)))
        for link, sd in spread.items():
            measured = float(np.std(alphas[link[1]] - alphas[link[0]], ddof=1))
            print(f"s={s} m={m} {link_id(link)}: sd {measured:.4f}")
            assert measured == pytest.approx(sd, abs=1e-4)
