"""spectral_ssl: bad input, the regulariser (against numpy), the benchmark's groups, losses,
probes, summaries, smoke runs (plain and with callbacks=spectra), claims 1-2 and the average-
accuracy piece of claim 3 at a short default-config run (its WGA gain there: a strict xfail),
and, with -m slow, claims 3-4 on the sweeps' grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from callbacks.spectra import effective_rank, participation_ratio
from conftest import compose_config
from runner.run import run
from runner.validation import ConfigError
from tasks.spectral_ssl import benchmark
from tasks.spectral_ssl.analysis import best_beta, claim4, summarize
from tasks.spectral_ssl.augment import augment
from tasks.spectral_ssl.config import Config
from tasks.spectral_ssl.data import SpuriousDigitsData
from tasks.spectral_ssl.losses import nt_xent, simsiam_loss
from tasks.spectral_ssl.probes import accuracy_summary, correlation_ratio
from tasks.spectral_ssl.regularizer import (
    REGULARIZERS,
    batch_covariance,
    flat_pr,
    frobenius,
    kl_uniform,
    spectral_penalty,
)

QUIET = ["logger=csv", "callbacks=none", "print_results=false"]
FORMS = sorted(REGULARIZERS)
SHORT_STEPS = 120  # claims 1 and 2: the first 20 epochs of the default config


def run_task(make_cfg, tmp_path, name, *overrides):
    return run(make_cfg(["task=spectral_ssl", *QUIET, *overrides], tmp_path / name))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("key,value,match", [
    ("ssl_method", "byol", r"task.ssl_method='byol' \(.*\) is not allowed; "
                           r"expected one of: simclr, simsiam$"),
    ("reg_form", "trace", r"task.reg_form='trace' \(.*\) is not allowed; "
                          r"expected one of: flat_pr, kl_uniform, frobenius$"),
    ("reg_layer", "head", r"task.reg_layer='head' .* is not allowed; "
                          r"expected one of: backbone, projector$"),
    ("spurious_kind", "texture", r"task.spurious_kind='texture' .* is not allowed; "
                                 r"expected one of: patch, colour$"),
    ("probe_scaling", "minmax", r"task.probe_scaling='minmax' .* is not allowed; "
                                r"expected one of: global, standard$"),
])
def test_bad_choices_are_rejected_with_the_allowed_values(key, value, match):
    from omegaconf import OmegaConf

    from runner.task_params import build_params

    with pytest.raises(ConfigError, match=match):
        build_params(OmegaConf.create({"name": "spectral_ssl", key: value}))


@pytest.mark.parametrize("key,value,match", [
    ("spurious_rho", 1.5, r"task.spurious_rho=1.5 is out of range; allowed: \[0, 1\]"),
    ("spurious_rho", -0.1, r"task.spurious_rho=-0.1 is out of range; allowed: \[0, 1\]"),
    ("batch_size", 1, r"task.batch_size=1 is out of range; allowed: \[2, inf\)"),
    ("n_attr", 17, r"task.n_attr=17 is out of range; allowed: \[2, 16\]"),
    ("reg_beta", -1.0, r"task.reg_beta=-1.0 is out of range"),
])
def test_bad_values_raise_config_error_naming_the_key(key, value, match):
    with pytest.raises(ConfigError, match=match):
        Config(**{key: value})


def test_choice_keys_accept_their_strings():
    from omegaconf import OmegaConf

    from runner.task_params import build_params, resolved_params

    params = build_params(OmegaConf.create({"name": "spectral_ssl", "ssl_method": "simsiam",
                                            "probe_scaling": "standard"}))
    assert params.ssl_method == "simsiam" and params.probe_scaling == "standard"
    assert Config().probe_scaling == "global"
    assert resolved_params(params)["probe_scaling"] == "standard"


def test_bad_value_fails_before_any_work(make_cfg, tmp_path, data_dir):
    before = sorted(data_dir.rglob("*"))  # the session's shared cache: nothing may be added
    with pytest.raises(ConfigError, match="task.ssl_method"):
        run_task(make_cfg, tmp_path, "bad", "task.ssl_method=byol")
    assert sorted(data_dir.rglob("*")) == before
    assert not (tmp_path / "bad").exists()  # a single run with a bad config leaves no run dir


# ----------------------------------------------------------------------------- the regulariser
def flat_batch(n: int = 200, d: int = 16, scale: float = 3.0) -> torch.Tensor:
    """n×d with centred orthonormal columns times `scale`: C = (scale²/n)·I, a flat spectrum."""
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(n, d, generator=gen, dtype=torch.float64)
    g = g - g.mean(0)
    q, _ = torch.linalg.qr(g)
    return scale * q


def collapsed_batch(n: int = 200, d: int = 16) -> torch.Tensor:
    """A near rank-one batch: one strong direction plus 1% isotropic noise."""
    gen = torch.Generator().manual_seed(1)
    u = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    v = torch.randn(1, d, generator=gen, dtype=torch.float64)
    return u @ v + 0.01 * torch.randn(n, d, generator=gen, dtype=torch.float64)


def offset_batch(n: int = 300, d: int = 12, seed: int = 3) -> torch.Tensor:
    """An anisotropic batch (column stds 0.1..3) whose columns have means 2..5, far from 0."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, d)
    return z + torch.linspace(2.0, 5.0, d, dtype=torch.float64)


def numpy_cov(z: torch.Tensor) -> np.ndarray:
    """Dense reference: the covariance of the centred features, np.cov(Z, bias=True) = Z_cᵀZ_c/n."""
    return np.cov(z.detach().numpy(), rowvar=False, bias=True)


def cov_evals(z: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of the numpy reference covariance (not the code under test)."""
    return torch.from_numpy(np.linalg.eigvalsh(numpy_cov(z)))


def numpy_penalty(z: torch.Tensor, form: str) -> float:
    """Dense reference of R(Z) from the eigenvalues λ of numpy_cov, p = λ/Σλ: flat_pr d·Σp² − 1,
    frobenius Σ(p − 1/d)² (the eigenbasis of C/tr C − I/d), kl_uniform −mean log(d·q) with
    q from λ + 1e-4·Σλ/d."""
    lam = np.clip(np.linalg.eigvalsh(numpy_cov(z)), 0.0, None)
    d = lam.size
    p = lam / lam.sum()
    if form == "flat_pr":
        return float(d * (p**2).sum() - 1)
    if form == "frobenius":
        return float(((p - 1 / d) ** 2).sum())
    q = lam + 1e-4 * lam.sum() / d
    return float(-np.log(d * q / q.sum()).mean())


def test_batch_covariance_is_that_of_the_centred_features():
    """C against numpy's covariance of centred features, on a batch with column means 2..5 (an
    uncentred ZᵀZ/n would add the outer product of the means, ≈ 12 on the diagonal)."""
    z = offset_batch()
    assert np.allclose(batch_covariance(z).numpy(), numpy_cov(z), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("form", FORMS)
def test_regulariser_against_a_dense_numpy_reference(form):
    """R(Z) of each form against numpy_penalty on the offset batch and on a near rank-one one."""
    for z in (offset_batch(), collapsed_batch() + 3.0):
        assert float(REGULARIZERS[form](z)) == pytest.approx(numpy_penalty(z, form), rel=1e-8)


def test_module_regulariser_averages_the_two_views_against_numpy():
    """The module's term ½(R(f1) + R(f2)) (each view centred on its own batch) against the
    numpy reference, for β > 0 (with a graph) and β = 0 (logged only, no graph)."""
    from tasks.spectral_ssl.module import SpectralSSLModule

    f1, f2 = offset_batch(256, 16, seed=4), collapsed_batch(256, 16) - 1.5
    expected = 0.5 * (numpy_penalty(f1, "flat_pr") + numpy_penalty(f2, "flat_pr"))
    for beta in (1.0, 0.0):
        module = SpectralSSLModule(Config(reg_beta=beta))
        out = module.regulariser(f1.clone().requires_grad_(True), f2.clone().requires_grad_(True))
        assert float(out.detach()) == pytest.approx(expected, rel=1e-8)
        assert out.requires_grad == (beta > 0)


@pytest.mark.parametrize("form", FORMS)
def test_regulariser_is_zero_for_a_flat_spectrum_and_positive_otherwise(form):
    z = flat_batch()  # centred orthonormal columns × 3: C = (9/200)·I
    assert torch.allclose(batch_covariance(z), 9 / 200 * torch.eye(16, dtype=torch.float64),
                          atol=1e-12)
    assert abs(float(REGULARIZERS[form](z))) < 1e-6  # kl_uniform: the eps floor is 1e-4·tr/d
    # translation: the flat batch moved by a mean vector (4, 4.5, ..., 11.5) is still flat
    assert abs(float(REGULARIZERS[form](z + torch.arange(16.0, dtype=torch.float64) / 2 + 4))) < 1e-6
    gen = torch.Generator().manual_seed(2)
    aniso = torch.randn(200, 16, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 2, 16)
    for z in (aniso, collapsed_batch()):
        assert float(REGULARIZERS[form](z)) > 1e-3


def test_flat_pr_equals_d_over_pr_minus_one_and_frobenius_its_share():
    z = offset_batch()
    evals = cov_evals(z)
    pr = participation_ratio(evals)
    assert float(flat_pr(z)) == pytest.approx(12 / pr - 1, rel=1e-10)
    assert float(frobenius(z)) == pytest.approx(float(flat_pr(z)) / 12, rel=1e-10)
    p = evals / evals.sum()
    assert float(flat_pr(z)) == pytest.approx(float(12 * (p * p).sum() - 1), rel=1e-10)
    lam = evals + 1e-4 * evals.sum() / 12
    q = lam / lam.sum()
    assert float(kl_uniform(z)) == pytest.approx(float(-(torch.log(12 * q)).mean()), rel=1e-10)


@pytest.mark.parametrize("form", FORMS)
def test_regulariser_is_scale_invariant(form):
    z = collapsed_batch()
    assert float(REGULARIZERS[form](7.0 * z)) == pytest.approx(float(REGULARIZERS[form](z)),
                                                               rel=1e-9)


@pytest.mark.parametrize("form", FORMS)
def test_gradient_raises_the_effective_rank_of_a_collapsed_batch(form):
    z = collapsed_batch().requires_grad_(True)
    before = effective_rank(cov_evals(z.detach()))
    assert before < 1.5
    penalty = REGULARIZERS[form](z)
    (grad,) = torch.autograd.grad(penalty, z)
    step = 0.5 * z.detach().norm() / grad.norm()  # a step of half the batch's norm
    after_z = z.detach() - step * grad
    after = effective_rank(cov_evals(after_z))
    assert after > before + 0.5
    assert float(REGULARIZERS[form](after_z)) < float(penalty.detach())


def test_penalty_of_a_degenerate_batch_is_zero_with_a_graph():
    z = torch.ones(1, 8, requires_grad=True)
    out = spectral_penalty(z, "flat_pr")
    assert float(out.detach()) == 0.0 and out.requires_grad
    assert float(spectral_penalty(torch.ones(4, 8), "kl_uniform")) == 0.0


def test_penalty_gates_on_rows_and_per_feature_variance_only():
    """Two distinct rows are enough: C has rank one, so flat_pr = d·tr(C²)/tr(C)² − 1 = d − 1.
    Constant columns with different values (no per-feature variance) give 0, finite. A batch
    of total variance below 1 is penalised like any other (R is scale invariant)."""
    z2 = torch.tensor([[0.0, 1.0, 2.0, 3.0], [1.0, -1.0, 0.5, 2.0]], dtype=torch.float64)
    assert float(spectral_penalty(z2, "flat_pr")) == pytest.approx(3.0, rel=1e-12)
    columns = torch.tensor([[1.0, 2.0, 3.0]] * 5, dtype=torch.float64)
    assert float(spectral_penalty(columns, "frobenius")) == 0.0
    z = offset_batch()
    small = 0.01 * z
    assert float(small.var(dim=0).sum()) < 1.0
    assert float(spectral_penalty(small, "flat_pr")) == pytest.approx(float(flat_pr(z)), rel=1e-9)
    assert float(flat_pr(z)) > 1e-3


def test_frobenius_of_a_flat_batch_is_zero_to_float64_roundoff():
    """d = 12 centred orthonormal columns: C/tr C = I/12 to 1e-16, so ‖C/tr C − I/12‖_F² is
    ~1e-32; I/12 rounded to float32 (1/12 is not a binary fraction) would leave ~7e-17."""
    q, _ = torch.linalg.qr(torch.randn(200, 12, generator=torch.Generator().manual_seed(5),
                                       dtype=torch.float64))
    q = q - q.mean(0)
    q, _ = torch.linalg.qr(q)
    assert float(frobenius(3.0 * q)) < 1e-26


# ----------------------------------------------------------------------------- benchmark
@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data = SpuriousDigitsData(Config(), str(tmp_path_factory.mktemp("ssl_data")), seed=0)
    data.setup()
    return data


def test_the_draw_is_cached_once_per_seed_with_its_dtypes(tmp_path):
    data = SpuriousDigitsData(Config(), str(tmp_path), seed=0)
    data.setup()
    assert len(list((tmp_path / "spectral_ssl").glob("*.safetensors"))) == 1
    assert data.train["image"].dtype == torch.float32 and data.train["image"].shape[1] == 64
    assert data.train["y"].dtype == data.train["a"].dtype == torch.int64
    assert data.test["probe_half"].dtype == torch.bool
    # another β and method: the same generating config, so the same file
    again = SpuriousDigitsData(Config(reg_beta=1.0, ssl_method="simsiam"), str(tmp_path), seed=0)
    again.setup()
    assert len(list((tmp_path / "spectral_ssl").glob("*.safetensors"))) == 1
    for part in ("train", "test"):
        for key, value in getattr(data, part).items():
            assert torch.equal(getattr(again, part)[key], value), (part, key)
    # the cached columns are the draw itself, bit for bit
    fresh = data.build()
    assert all(torch.equal(data.tensors[k], fresh[k]) and data.tensors[k].dtype == fresh[k].dtype
               for k in fresh)
    SpuriousDigitsData(Config(spurious_rho=0.8), str(tmp_path), seed=0).setup()
    SpuriousDigitsData(Config(), str(tmp_path), seed=1).setup()
    assert len(list((tmp_path / "spectral_ssl").glob("*.safetensors"))) == 3


def test_train_split_has_the_stated_group_proportions(digits):
    y, a = digits.train["y"].numpy(), digits.train["a"].numpy()
    n, rho, n_attr = y.size, 0.95, 10
    aligned = a == y % n_attr
    assert abs(aligned.mean() - rho) < 3 * math.sqrt(rho * (1 - rho) / n)  # binomial 3σ
    # the minority is uniform over the other values: a − g(y) mod n_attr ∈ {1..9} evenly
    offsets = ((a - y) % n_attr)[~aligned]
    counts = np.bincount(offsets, minlength=n_attr)[1:]
    expected = (~aligned).sum() / (n_attr - 1)
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 21.7  # χ²(8) 99th percentile
    # the class proportions follow the stratified split: every class about 80% of its images
    full = np.bincount(benchmark.load_digit_images()[1])
    assert np.all(np.abs(np.bincount(y) - 0.8 * full) <= 1)


def test_test_split_is_balanced_by_re_rendering(digits):
    test = digits.test
    masks, colours = benchmark.patch_masks(10), benchmark.colour_values(10)
    x, y, a, idx = benchmark.render_all(test["image"], test["y"], "patch", masks, colours)
    n_test = test["y"].numel()
    assert x.shape == (10 * n_test, 64) and abs(n_test - 0.2 * 1797) < 6
    table = np.zeros((10, 10), int)
    np.add.at(table, (y.numpy(), a.numpy()), 1)
    per_class = np.bincount(test["y"].numpy())
    assert np.array_equal(table, np.repeat(per_class[:, None], 10, axis=1))  # all of class y
    assert np.allclose(table / table.sum(),
                       np.outer(table.sum(1), table.sum(0)) / table.sum() ** 2)  # a ⟂ y
    # each group (y, a) holds exactly the test images of class y, under attribute a
    for v in (0, 7):
        assert torch.equal(idx[a == v], torch.arange(n_test))
    # the probe halves split images (not renderings), half of each class
    half = test["probe_half"].numpy()
    assert np.array_equal(np.bincount(test["y"].numpy()[half]), per_class // 2)


@pytest.mark.parametrize("kind", ["patch", "colour"])
def test_the_cue_survives_augmentation_and_is_constant_per_attribute(kind):
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(64, 64, generator=gen)
    a = torch.randint(0, 10, (64,), generator=gen)
    masks, colours = benchmark.patch_masks(10), benchmark.colour_values(10)
    torch.manual_seed(0)
    x = benchmark.render(augment(images, 1, 1.0, 3, 0.1), a, kind, masks, colours)
    if kind == "patch":
        m = masks[a].bool()
        assert torch.all(x[m] == benchmark.PATCH_VALUE) and x.shape == (64, 64)
        assert torch.all(masks.sum(1) == 4)
        assert torch.all((masks @ masks.T - 4 * torch.eye(10)) == 0)  # disjoint blocks
    else:
        assert x.shape == (64, 128) and torch.equal(x[:, 64:], colours[a, None].expand(-1, 64))
    assert not torch.allclose(x, benchmark.render(images, a, kind, masks, colours))


def test_random_shift_moves_the_digit_by_at_most_one_pixel():
    img = torch.zeros(1, 8, 8)
    img[0, 3, 4] = 1.0
    torch.manual_seed(0)
    out = __import__("tasks.spectral_ssl.augment", fromlist=["random_shift"]).random_shift(
        img.reshape(1, 64).repeat(200, 1), 1).reshape(200, 8, 8)
    rows, cols = torch.nonzero(out, as_tuple=True)[1:]
    assert out.sum() == 200 and rows.min() == 2 and rows.max() == 4
    assert cols.min() == 3 and cols.max() == 5


# ----------------------------------------------------------------------------- losses, probes
def test_nt_xent_matches_the_formula_by_loops():
    gen = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(5, 4, generator=gen, dtype=torch.float64), torch.randn(
        5, 4, generator=gen, dtype=torch.float64)
    h = torch.cat([z1, z2])
    tau, n = 0.5, 10
    cos = torch.nn.functional.cosine_similarity(h[:, None], h[None], dim=2)
    total = 0.0
    for i in range(n):
        j = (i + 5) % n
        den = sum(math.exp(float(cos[i, k]) / tau) for k in range(n) if k != i)
        total += -math.log(math.exp(float(cos[i, j]) / tau) / den)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(total / n, rel=1e-10)


def test_simsiam_loss_stops_the_gradient_of_the_targets():
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4, requires_grad=True)
    p1, p2 = z1 * 2.0, z2 * 3.0  # a "predictor" that keeps directions: loss is −1
    loss = simsiam_loss(p1, p2, z1, z2)
    loss.backward()
    assert float(simsiam_loss(z1 * 2, z1, z1, z1).detach()) == pytest.approx(-1.0)
    assert z1.grad is not None  # through p1 only
    assert float(simsiam_loss(z1, z2, z1, z2).detach()) == pytest.approx(
        -float(torch.nn.functional.cosine_similarity(z1, z2).mean().detach()), rel=1e-6)


def test_group_accuracies_and_correlation_ratio():
    y = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    a = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    pred = np.array([0, 1, 1, 1, 0, 0, 1, 0])
    acc = accuracy_summary(pred, y, a, n_classes=2, n_attr=2)
    assert acc["avg_acc"] == pytest.approx(6 / 8)
    assert acc["worst_group_acc"] == pytest.approx(0.5)  # groups (0,1) and (1,1): 1 of 2
    score = torch.tensor([1.0, 1.0, 3.0, 3.0])
    assert correlation_ratio(score, torch.tensor([0, 0, 1, 1])) == pytest.approx(1.0)
    assert correlation_ratio(score, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0)


def fake_result(method, beta, seed, wga, avg, erank, rho=0.95):
    params = {"ssl_method": method, "reg_form": "flat_pr", "reg_layer": "backbone",
              "spurious_kind": "patch", "n_attr": 10, "spurious_rho": rho, "reg_beta": beta}
    pm = {"worst_group_acc": wga, "avg_acc": avg, "mean_group_acc": avg,
          "worst_group_acc_erm": 0.0, "avg_acc_erm": 0.4, "effective_rank": erank,
          "top_eig_share": 0.2, "spurious_alignment": 0.9, "pc_probe_acc_a": 0.4,
          "pc_probe_acc_y": 0.1, "top_eig_share_peak": 0.3, "chance_a": 0.1, "chance_y": 0.1}
    return {"status": "completed", "seed": seed, "params": params, "paper_metrics": pm,
            "job_dir": ""}


def test_summarize_pairs_gains_by_seed_and_picks_the_best_beta():
    results = []
    for seed, base in enumerate((0.2, 0.4, 0.3)):
        results.append(fake_result("simclr", 0.0, seed, base, 0.8, 10.0))
        results.append(fake_result("simclr", 0.1, seed, base + 0.05 * (seed + 1), 0.81, 12.0))
        results.append(fake_result("simclr", 1.0, seed, base + 0.2, 0.79, 20.0))
        results.append(fake_result("simclr", 0.0, seed, base, 0.8, 10.0, rho=0.8))
        results.append(fake_result("simclr", 1.0, seed, base + 0.1, 0.8, 20.0, rho=0.8))
    results.append({"status": "failed", "seed": 9, "paper_metrics": {}})
    s = summarize(results)
    row = s[(s["reg_beta"] == 0.1) & (s["spurious_rho"] == 0.95)].iloc[0]
    assert row["n_seeds"] == 3 and row["gain_wga_mean"] == pytest.approx(0.1)
    assert row["gain_wga_sd"] == pytest.approx(0.05)
    assert row["wga_mean"] == pytest.approx(0.4) and row["gain_erank_mean"] == pytest.approx(2)
    best = best_beta(s)
    top = best[best["spurious_rho"] == 0.95].iloc[0]
    assert top["reg_beta"] == 1.0 and top["gain_wga_mean"] == pytest.approx(0.2)
    assert not top["claim3"]  # average accuracy dropped by 0.01
    c4 = claim4(s).iloc[0]
    assert c4["wga_gain"] == "+0.100, +0.200" and c4["non_decreasing"]


# ----------------------------------------------------------------------------- runs
SPECTRA = ["callbacks=spectra", "callbacks.feature_spectrum.every_n_epochs=1",
           "callbacks.matrix_spectrum.every_n_epochs=1", "callbacks.feature_spectrum.n_probe=512",
           "callbacks.feature_spectrum.budget_frac=null", "callbacks.matrix_spectrum.budget_frac=null"]


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """β = 0 and β = 1 at the default config for SHORT_STEPS steps, seed 0 (claims 1, 2); the
    probes' lbfgs stops after 100 iterations (time). The β = 1 run also has callbacks=spectra
    with a snapshot at the end of every epoch."""
    base = tmp_path_factory.mktemp("ssl_claims")
    out = {}
    for beta, extra in ((0.0, ["callbacks=none"]), (1.0, SPECTRA)):
        cfg = compose_config(["task=spectral_ssl", "logger=csv", "print_results=false", *extra,
                              f"task.steps={SHORT_STEPS}", f"task.reg_beta={beta}",
                              "task.probe_max_iter=100"], base / f"b{beta}", base / "data")
        out[beta] = (run(cfg), base / f"b{beta}")
    return out


def test_smoke_run_writes_the_probe_results(short_runs):
    res, run_dir = short_runs[0.0]
    assert res["status"] == "completed" and res["global_step"] == SHORT_STEPS
    pm = res["paper_metrics"]
    for key in ("worst_group_acc", "avg_acc", "effective_rank", "top_eig_share",
                "spurious_alignment", "worst_group_acc_erm", "avg_acc_erm", "pc_probe_acc_a",
                "pc_probe_acc_y", "participation_ratio", "top_eig_share_peak"):
        assert math.isfinite(pm[key]), key
    assert res["params"]["reg_form"] == "flat_pr" and pm["steps_per_epoch"] == 6
    assert pm["epochs"] == SHORT_STEPS // 6
    last = pd.read_csv(run_dir / "metrics.csv")[["spectrum/backbone/effective_rank",
                                                  "spectrum/backbone/top_eig_share"]].dropna()
    # the final spectra in results.json are those of the last epoch, on the same fixed batch
    assert pm["effective_rank"] == pytest.approx(last.iloc[-1, 0], rel=1e-5)
    assert pm["top_eig_share"] == pytest.approx(last.iloc[-1, 1], rel=1e-5)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["paper_metrics"]["worst_group_acc"] == pm["worst_group_acc"]
    metrics = pd.read_csv(run_dir / "metrics.csv")
    curve = metrics[["step", "spectrum/backbone/effective_rank"]].dropna()
    assert len(curve) == SHORT_STEPS // 6  # one row per epoch, without callbacks=spectra
    assert np.all(np.diff(curve["step"].to_numpy()) == 6)  # Lightning logs at global_step − 1
    assert "spectrum/backbone/top_eig_share" in metrics and "train/reg" in metrics


def test_pixel_probe_against_an_independent_sklearn_and_pandas_computation(short_runs, digits):
    """The run's raw-pixel group-balanced probe (avg, worst-group and mean-group accuracy)
    against a reimplementation: every test image under every patch, a logistic regression
    (C = 1, 100 lbfgs iterations) fitted on each probe half after centring and dividing by
    sqrt(mean variance) of that half, predicting the other half; accuracies per (y, a) group by
    pandas. The same run and split (seed 0): the values must agree exactly."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    pm = short_runs[0.0][0]["paper_metrics"]
    test = digits.test
    n = test["y"].numel()
    a = np.repeat(np.arange(10), n)
    images = np.tile(test["image"].numpy().astype(np.float64), (10, 1))
    masks = benchmark.patch_masks(10).numpy().astype(bool)
    images[masks[a]] = benchmark.PATCH_VALUE  # the cue painted over the digit
    y = np.tile(test["y"].numpy(), 10)
    half = np.tile(test["probe_half"].numpy(), 10)
    pred = np.empty_like(y)
    for fit in (half, ~half):
        mean, scale = images[fit].mean(0), np.sqrt(images[fit].var(0).mean())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(C=1.0, max_iter=100).fit((images[fit] - mean) / scale,
                                                               y[fit])
        pred[~fit] = clf.predict((images[~fit] - mean) / scale)
    groups = pd.DataFrame({"y": y, "a": a, "ok": pred == y}).groupby(["y", "a"])["ok"].mean()
    assert len(groups) == 100
    assert pm["avg_acc_pixels"] == pytest.approx(float((pred == y).mean()), abs=1e-12)
    assert pm["worst_group_acc_pixels"] == pytest.approx(float(groups.min()), abs=1e-12)
    assert pm["mean_group_acc_pixels"] == pytest.approx(float(groups.mean()), abs=1e-12)


# Seed spread at the short size (SHORT_STEPS = 120, SimCLR, ρ = 0.95; β = 0 vs β = 1, seeds
# 0-4, probe_max_iter = 100), per seed: PC1 probe acc a − y at β = 0: +0.428, +0.393, +0.410,
# +0.458, +0.407; effective rank β = 1 − β = 0: +54.4, +55.7, +57.3, +53.8, +57.7; average
# accuracy (group-balanced probe) β = 1 − β = 0: +0.018, +0.022, +0.010, +0.013, +0.010; WGA
# β = 1 − β = 0: +0.074, +0.057, +0.029, −0.057, −0.029. The tests use seed 0.
def test_claim1_top_pc_predicts_the_spurious_attribute_at_beta_0(short_runs):
    """Claim 1 at β = 0: the first principal component predicts a better than y, by more than
    0.34 (measured +0.419 ± 0.025 over seeds 0-4: the margin is mean − 3 sd), and a above
    chance (0.1)."""
    pm = short_runs[0.0][0]["paper_metrics"]
    print({k: pm[k] for k in ("pc_probe_acc_a", "pc_probe_acc_y", "spurious_alignment",
                              "core_alignment", "top_eig_share_first_epoch",
                              "top_eig_share_peak", "z_std")})
    assert pm["pc_probe_acc_a"] - pm["pc_probe_acc_y"] > 0.34
    assert pm["pc_probe_acc_a"] > pm["chance_a"]


def test_claim2_regularisation_raises_the_effective_rank(short_runs):
    """Claim 2: β = 1 raises the effective rank of h over β = 0 (same seed) by more than 50
    (measured +55.8 ± 1.7 over seeds 0-4: the margin is mean − 3 sd; with the batch covariance
    left uncentred the regulariser reaches only 54.7 − 9.8 = +44.8 at seed 0). Both effective
    ranks are checked against numpy on the eigenvalues the spectra callback wrote for the β = 1
    run (exp of the spectral entropy of the eval-batch covariance)."""
    er0 = short_runs[0.0][0]["paper_metrics"]["effective_rank"]
    er1 = short_runs[1.0][0]["paper_metrics"]["effective_rank"]
    print({"effective_rank_beta0": er0, "effective_rank_beta1": er1})
    assert er1 - er0 > 50
    with np.load(short_runs[1.0][1] / "spectra" / "matrices.npz") as m:
        lam = np.clip(m["backbone_cov"][-1], 0, None)
    p = lam[lam > 0] / lam.sum()
    assert er1 == pytest.approx(float(np.exp(-(p * np.log(p)).sum())), rel=1e-6)


def test_claim3_average_accuracy_rises_with_the_regulariser(short_runs):
    """Claim 3, the piece that shows at the short size: β = 1 raises the group-balanced probe's
    average accuracy over β = 0 (same seed) by more than 0.004 (measured +0.0148 ± 0.0052 over
    seeds 0-4: the margin is mean − 2 sd)."""
    avg0 = short_runs[0.0][0]["paper_metrics"]["avg_acc"]
    avg1 = short_runs[1.0][0]["paper_metrics"]["avg_acc"]
    print({"avg_acc_beta0": avg0, "avg_acc_beta1": avg1})
    assert avg1 - avg0 > 0.004


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, spectral_ssl): at the short size (120 steps) the WGA gain of β = 1 is "
    "+0.074 at seed 0 and +0.015 ± 0.056 over seeds 0-4 (+0.074, +0.057, +0.029, −0.057, "
    "−0.029), not the +0.10 of claim 3 (after 2,000 steps β = 1 gains +0.073 ± 0.036 and the "
    "best β +0.092 SimCLR, +0.112 SimSiam: test_claim3_* in -m slow)"))
def test_claim3_wga_gain_of_ten_points_at_the_short_size(short_runs):
    """Claim 3's headline at the short size: WGA(β = 1) − WGA(β = 0) ≥ +0.10 (seed 0)."""
    wga0 = short_runs[0.0][0]["paper_metrics"]["worst_group_acc"]
    wga1 = short_runs[1.0][0]["paper_metrics"]["worst_group_acc"]
    print({"wga_beta0": wga0, "wga_beta1": wga1})
    assert wga1 - wga0 >= 0.10


def test_spectra_callbacks_log_the_feature_spectrum_every_epoch(short_runs):
    res, run_dir = short_runs[1.0]
    assert res["status"] == "completed"
    epochs = SHORT_STEPS // 6
    epoch_ends = [6 * (e + 1) for e in range(epochs)]
    with np.load(run_dir / "spectra" / "features.npz") as f:
        key = "net.backbone.6"  # the representation layer h (128-d)
        assert list(f[f"{key}__steps"]) == [0, *epoch_ends]  # start + every epoch end
        assert f[key].shape == (epochs + 1, 128) and np.all(np.diff(f[key][-1]) <= 1e-9)
    with np.load(run_dir / "spectra" / "matrices.npz") as m:
        assert list(m["backbone_cov__steps"]) == [0, *epoch_ends]
        assert m["backbone_cov"].shape == (epochs + 1, 128)
        assert m["projector_cov"].shape == (epochs + 1, 64)
        # the callback's covariance spectrum on the evaluation batch = the task's own log
        ev = np.sort(m["backbone_cov"][-1])[::-1]
        share = ev[0] / ev.sum()
    assert share == pytest.approx(res["paper_metrics"]["top_eig_share"], rel=1e-6)
    assert (run_dir / "plots" / "features.png").is_file()
    assert (run_dir / "plots" / "matrices.png").is_file()


def test_simsiam_with_kl_uniform_on_the_projector_runs(make_cfg, tmp_path):
    res = run_task(make_cfg, tmp_path, "siam", "task.steps=12", "task.hidden_dim=32",
                   "task.rep_dim=16", "task.proj_dim=8", "task.ssl_method=simsiam",
                   "task.reg_form=kl_uniform", "task.reg_layer=projector",
                   "task.spurious_kind=colour", "task.probe_max_iter=50")
    pm = res["paper_metrics"]
    assert res["status"] == "completed" and res["params"]["reg_form"] == "kl_uniform"
    assert res["params"]["spurious_kind"] == "colour" and pm["epochs"] == 2
    assert all(math.isfinite(pm[k]) for k in ("worst_group_acc", "avg_acc", "effective_rank",
                                                "reg_final", "z_std"))


# ----------------------------------------------------------------------------- slow: claims 3, 4
BETA_SWEEP = (0, 0.01, 0.1, 1)  # conf/experiment/spectral_ssl/beta_sweep.yaml (ρ = 0.95)
RHO_SWEEP = (0.8, 0.9, 0.95, 0.99)  # conf/experiment/spectral_ssl/rho_sweep.yaml
BEST_BETA = {"simclr": 0.01, "simsiam": 0.1}  # the β > 0 with the largest mean WGA gain at ρ = 0.95
SEEDS = (0, 1, 2)


def sweep(make_cfg, tmp_path, method: str, betas: tuple[float, ...], rhos: tuple[float, ...],
          seeds: tuple[int, ...] = SEEDS) -> list[dict]:
    """Return the results of `method` × β × ρ × seeds at the default config (2,000 steps): read
    from the finished sweeps under $SPECTRAL_SSL_SWEEP_DIR when set (e.g.
    multirun/spectral_ssl/claims, the beta and ρ sweeps of the README), else run here (≈ 2 min
    per run on one shared core)."""
    import os
    from pathlib import Path

    from runner.report import load_results

    points = {(float(b), float(r), int(s)) for b in betas for r in rhos for s in seeds}
    folder = os.environ.get("SPECTRAL_SSL_SWEEP_DIR")
    if folder:
        found = [r for r in load_results(Path(folder))
                 if r.get("task") == "spectral_ssl" and r.get("status") == "completed"
                 and r["params"]["ssl_method"] == method
                 and (float(r["params"]["reg_beta"]), float(r["params"]["spurious_rho"]),
                      int(r["seed"])) in points]
        if len(found) != len(points):  # not an AssertionError: the xfails must not swallow it
            raise LookupError(f"{folder}: {len(found)} runs for the {len(points)} points of "
                              f"{method}")
        return found
    return [run_task(make_cfg, tmp_path, f"{method}_{rho}_{beta}_{seed}",
                     f"task.ssl_method={method}", f"task.reg_beta={beta}",
                     f"task.spurious_rho={rho}", f"seed={seed}")
            for rho, beta, seed in sorted((r, b, s) for b, r, s in points)]


def claim3_row(make_cfg, tmp_path, method: str) -> pd.Series:
    """Return best_beta() of `method` on the beta_sweep grid (β ∈ BETA_SWEEP, ρ = 0.95, 3 seeds)."""
    from tasks.spectral_ssl.analysis import notes

    summary = summarize(sweep(make_cfg, tmp_path, method, BETA_SWEEP, (0.95,)))
    print(notes(summary))
    best = best_beta(summary)
    if len(best) != 1:
        raise LookupError(best.to_string())
    return best.iloc[0]


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_claim3_simsiam_best_beta_gains_ten_points_of_wga(make_cfg, tmp_path):
    """Claim 3 for SimSiam on the beta_sweep grid (12 runs): the best β > 0 gains ≥ +0.10 WGA
    (group-balanced probe) over β = 0, paired by seed, with average accuracy not lower
    (README: β = 0.1, +0.112 ± 0.043, average +0.054)."""
    row = claim3_row(make_cfg, tmp_path, "simsiam")
    assert bool(row["claim3"]), row.to_string()


@pytest.mark.slow
@pytest.mark.timeout(7200)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, spectral_ssl): SimCLR's best β = 0.01 gains +0.092 ± 0.093 WGA over β = 0 "
    "(3 seeds, ρ = 0.95), short of +0.10; β = 0.1 and 1 give +0.082 and +0.073"))
def test_claim3_simclr_best_beta_gains_ten_points_of_wga(make_cfg, tmp_path):
    """Claim 3 for SimCLR on the beta_sweep grid (12 runs), as for SimSiam."""
    row = claim3_row(make_cfg, tmp_path, "simclr")
    assert bool(row["claim3"]), row.to_string()


def claim4_row(make_cfg, tmp_path, method: str) -> pd.Series:
    """Return claim4() of `method` on the rho_sweep grid: β ∈ {0, BEST_BETA[method]} × ρ ∈
    RHO_SWEEP × 3 seeds (24 runs, the README's ρ table)."""
    summary = summarize(sweep(make_cfg, tmp_path, method, (0, BEST_BETA[method]), RHO_SWEEP))
    c4 = claim4(summary)
    print(c4.to_string())
    if len(c4) != 1 or c4.iloc[0]["rho"] != ", ".join(f"{r:g}" for r in RHO_SWEEP):
        raise LookupError(c4.to_string())
    return c4.iloc[0]


@pytest.mark.slow
@pytest.mark.timeout(10800)
def test_claim4_simclr_wga_gain_is_non_decreasing_in_rho(make_cfg, tmp_path):
    """Claim 4 for SimCLR at its best β = 0.01: the WGA gain over β = 0 (3 seeds) is
    non-decreasing over ρ = 0.8, 0.9, 0.95, 0.99 (README: +0.038, +0.070, +0.092, +0.095, each
    step within the seed spread, sd 0.04–0.12)."""
    assert bool(claim4_row(make_cfg, tmp_path, "simclr")["non_decreasing"])


@pytest.mark.slow
@pytest.mark.timeout(10800)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, spectral_ssl): SimSiam's WGA gain at β = 0.1 is +0.226, +0.138, +0.112, "
    "+0.152 at ρ = 0.8, 0.9, 0.95, 0.99: largest at the weakest correlation"))
def test_claim4_simsiam_wga_gain_is_non_decreasing_in_rho(make_cfg, tmp_path):
    """Claim 4 for SimSiam at its best β = 0.1, as for SimCLR."""
    assert bool(claim4_row(make_cfg, tmp_path, "simsiam")["non_decreasing"])
