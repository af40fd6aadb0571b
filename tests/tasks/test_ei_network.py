"""ei_network: connectivity, theory against the mean matrix, order parameters, the 1D claims."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import compose_config
from runner.run import run
from runner.task_params import resolved_params
from runner.validation import ConfigError
from tasks.ei_network.analysis import REGIME_ORDER, _theory_map, notes, plot, summarize
from tasks.ei_network.config import MAX_CLIPPED_SHARE, POPS, PRESETS, Config
from tasks.ei_network.connectivity import (
    block_clipping,
    clipped_share_of,
    connection_prob,
    in_degree,
)
from tasks.ei_network.data import EINetworkData, draw_j, run_dynamics
from tasks.ei_network.inference import MeanFieldFit, observed_input
from tasks.ei_network.lattice import kernel_overlap
from tasks.ei_network.module import EINetworkModule, observe
from tasks.ei_network.order import (
    classify,
    dominant_frequency,
    dominant_wavevector,
    global_sync,
    local_sync,
    moran_i,
)
from tasks.ei_network.simulate import simulate
from tasks.ei_network.spectrum import (
    compare,
    dense_eigenvalues,
    match_outliers,
    pack_eigenvalues,
    relative_error,
    sparse_eigenvalues,
    unpack_eigenvalues,
)
from tasks.ei_network.theory import (
    bulk_radius,
    bulk_variance_matrix,
    classify_theory,
    mode_eigenvalues,
    mode_matrix,
    outliers_tensor,
    theory,
    theory_from_config,
    wave_vectors,
)

RING = ["task=ei_network", "task.dim=1", "task.n_exc=800", "logger=csv"]
THRESHOLDS = {k: getattr(Config(), k) for k in ("thr_activity", "thr_global_sync",
                                                 "thr_local_sync", "thr_moran", "thr_static",
                                                 "thr_osc_std")}


@pytest.fixture(scope="module")
def ring_runs(tmp_path_factory):
    """Run the stable, bump and chaos presets once on the 1D ring (N_E = 800, ranges ×2)."""
    base = tmp_path_factory.mktemp("ring")
    out = {}
    for preset in ("stable", "bump", "chaos"):
        cfg = compose_config([*RING, f"task.preset={preset}"], base / preset, base / "data")
        out[preset] = run(cfg)
    return out


# ------------------------------------------------------------------ config
def test_preset_values_and_explicit_override():
    c = Config(preset="bump", gbar_ie=11.2)
    assert c.gbar_ie == 11.2 and c.gbar_ee == PRESETS["bump"]["gbar_ee"]
    assert c.range_ei == PRESETS["bump"]["range_ei"] and c.g_het == 0.1
    default = Config(preset=None)
    assert default.gbar_ee == PRESETS["stable"]["gbar_ee"]
    assert Config(dim=2, n_exc=2500).scale == pytest.approx(4.0)
    assert Config(dim=1, n_exc=800).scale == pytest.approx(2.0)


def test_yaml_nulls_resolve_to_the_preset(tmp_path):
    from runner.task_params import build_params

    cfg = compose_config(["task=ei_network", "task.preset=chaos", "task.gbar_ii=-5"],
                         tmp_path / "r", tmp_path / "d")
    params = build_params(cfg.task)
    assert params.g_het == 0.9 and params.range_ii == 0.085 and params.gbar_ii == -5.0


@pytest.mark.parametrize("kwargs, key", [
    ({"range_ee": -0.05}, "task.range_ee"),
    ({"range_ii": 0.0}, "task.range_ii"),
    ({"density": -0.1}, "task.density"),
    ({"density": 1.2}, "task.density"),
    ({"dim": 2, "n_exc": 2500, "inh_ratio": 0.3}, "task.inh_ratio"),
    ({"dim": 2, "n_exc": 2000}, "task.n_exc"),
    ({"dim": 1, "n_exc": 801}, "task.inh_ratio"),
    ({"gbar_ei": 3.0}, "task.gbar_ei"),
])
def test_bad_input_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config(**kwargs)


def test_bad_input_through_the_runner(tmp_path):
    cfg = compose_config(["task=ei_network", "task.preset=nope"], tmp_path / "r", tmp_path / "d")
    with pytest.raises(ConfigError, match=r"task\.preset='nope'"):
        run(cfg)


@pytest.mark.parametrize("override, key", [("task.preset=spiral", "preset"),
                                           ("task.mode=fit", "mode"),
                                           ("task.eig_method=lanczos", "eig_method")])
def test_bad_choice_is_rejected_by_the_schema(tmp_path, override, key):
    from runner.task_params import build_params

    cfg = compose_config(["task=ei_network", override], tmp_path / "r", tmp_path / "d")
    with pytest.raises(ConfigError, match=rf"task\.{key}='{override.split('=')[1]}'"):
        build_params(cfg.task)


# ------------------------------------------------------------------ connectivity
def test_in_degree_and_dale_signs():
    c = Config(preset="bump", dim=1, n_exc=800)
    j, info = draw_j(c, seed=0)
    ne = c.n_exc
    blocks = {"ee": j[:ne, :ne], "ie": j[ne:, :ne], "ei": j[:ne, ne:], "ii": j[ne:, ne:]}
    n_pre = {"e": c.n_exc, "i": c.n_inh}
    for blk, w in blocks.items():
        k = in_degree(c.density, c.ranges()[blk], n_pre[blk[1]], c.dim)
        assert (w != 0).sum(1).double().mean() == pytest.approx(k, rel=0.02), blk
        nz = w[w != 0].double()
        sign = 1 if blk[1] == "e" else -1
        assert sign * float(nz.mean()) > 0          # Dale: E columns excite, I columns inhibit
        # each weight ~ N(ḡ/K, g²/K): the sign flips with probability Φ(−|ḡ|/(g√K))
        flip = float((sign * nz < 0).double().mean())
        expect = 0.5 * math.erfc(abs(c.gbar()[blk]) / (c.g_het * math.sqrt(k)) / math.sqrt(2))
        assert flip == pytest.approx(expect, abs=0.01), blk
    assert info["max_connection_prob"] <= 1.0


def test_draw_and_recording_are_cached_once_and_bit_identical(tmp_path):
    c = Config(preset="bump", dim=1, n_exc=400, mode="infer", t_total=100, burn_in=20)
    data = EINetworkData(c, str(tmp_path), seed=2)
    data.setup("fit")
    files = sorted((tmp_path / "ei_network").glob("*.safetensors"))
    assert len(files) == 2  # the draw J and, for mode=infer, the recording
    j, info = draw_j(c, seed=2)
    assert data.j.dtype == torch.float32 and torch.equal(data.j, j)
    assert data.info == info
    from tasks.ei_network.data import run_dynamics

    rec = run_dynamics(c, j, 2)
    assert data.recording.x.dtype == torch.float32 and torch.equal(data.recording.x, rec.x)
    assert data.recording.times.dtype == torch.float64
    assert torch.equal(data.recording.times, rec.times)
    assert data.recording.diverged is False and data.recording.diverged_at is None
    again = EINetworkData(c, str(tmp_path), seed=2)
    again.build = again._build_recording = None  # a rebuild would fail
    again.setup("fit")
    assert torch.equal(again.j, j) and torch.equal(again.recording.x, rec.x)
    longer = EINetworkData(Config(preset="bump", dim=1, n_exc=400, mode="infer", t_total=120,
                                  burn_in=20), str(tmp_path), seed=2)
    longer.setup("fit")  # same J, new recording
    assert len(list((tmp_path / "ei_network").glob("*.safetensors"))) == 3
    EINetworkData(Config(preset="bump", dim=1, n_exc=400), str(tmp_path), seed=3).setup("fit")
    assert len(list((tmp_path / "ei_network").glob("*.safetensors"))) == 4


def test_connection_probability_peaks_at_density_and_integrates_to_k():
    p = connection_prob(30, 30, 0.08, 0.9, dim=2)
    assert float(p.max()) == pytest.approx(0.9, rel=1e-6)
    k = in_degree(0.9, 0.08, 900, dim=2)
    assert float(p.sum(1).mean()) == pytest.approx(k, rel=1e-6)


# ------------------------------------------------------------------ clipping rule
@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_default_passes_validation(tmp_path, preset):
    """The default size (2D, N_E = 2,500) of every preset fits the rule; chaos clips 2.2e-6."""
    from runner.task_params import build_params

    cfg = compose_config(["task=ei_network", f"task.preset={preset}"], tmp_path / "r",
                         tmp_path / "d")
    params = build_params(cfg.task)
    shares = {blk: share for blk, (_, share) in params.clipping().items()}
    assert max(shares.values()) <= MAX_CLIPPED_SHARE
    if preset == "chaos":  # d_II = 0.34: peak 1.0009, only I←I clips
        assert params.clipping()["ii"][0] == pytest.approx(1.0009, abs=1e-4)
        assert shares["ii"] == pytest.approx(2.18e-6, rel=0.01) and shares["ee"] == 0.0
    else:
        assert max(shares.values()) == 0.0


def test_wave_at_900_is_refused_with_the_smallest_size_that_fits(tmp_path):
    """Was a ZeroDivisionError in compare (the theory radius was 0): now refused before work,
    naming task.n_exc, the peak, the clipped share and the smallest N_E that fits."""
    cfg = compose_config(["task=ei_network", "task.preset=wave", "task.n_exc=900"],
                         tmp_path / "r", tmp_path / "d")
    with pytest.raises(ConfigError) as err:
        run(cfg)
    message = str(err.value)
    assert err.value.key == "task.n_exc" and "task.n_exc=900" in message
    assert "peaks at 1.3715" in message and "23.072%" in message
    assert "task.n_exc >= 1600" in message and "(set by the override task.n_exc=900)" in message
    assert not (tmp_path / "d" / "ei_network").exists()  # nothing drawn
    assert Config(preset="wave", n_exc=1600).clipping()["ei"][1] <= MAX_CLIPPED_SHARE


@pytest.mark.parametrize("kwargs, key, fits", [
    ({"preset": "chaos", "n_exc": 1600}, "task.n_exc", "task.n_exc >= 2304"),
    ({"preset": "bump", "n_exc": 400, "range_scale": 10.0}, "task.range_scale",
     "task.range_scale <= 5.17"),
    ({"preset": "stable", "dim": 1, "n_exc": 400, "density": 1.0, "range_scale": 8.0},
     "task.range_scale", "task.range_scale <= "),
])
def test_clipping_beyond_the_rule_is_refused_naming_the_key(kwargs, key, fits):
    with pytest.raises(ConfigError) as err:
        Config(**kwargs)
    assert err.value.key == key and fits in str(err.value), str(err.value)
    assert "task.density <= " in str(err.value)


def test_refusal_names_values_that_fit():
    """The sizes and scales the message offers do pass; one grid step below the size does not."""
    assert max(s for _, s in Config(preset="chaos", n_exc=2304).clipping().values()) <= 1e-3
    with pytest.raises(ConfigError):
        Config(preset="chaos", n_exc=2116)  # 46² (the grid step below 48²): 2.1e-3
    Config(preset="bump", n_exc=400, range_scale=5.17)
    with pytest.raises(ConfigError):
        Config(preset="bump", n_exc=400, range_scale=5.18)


def _tiny_ii_clip(density: float) -> dict:
    """A 1D network of N_E = 8, N_I = 2 where only I←I can clip: its offsets are 0 and 1/2."""
    return dict(preset=None, dim=1, n_exc=8, range_scale=1.0, density=density, range_ee=0.05,
                range_ie=0.05, range_ei=0.05, range_ii=0.35, n_max_wave=1)


def test_clipped_share_equals_the_hand_computed_value(tmp_path, caplog):
    """On the I grid {0, 1/2}: f0 = Σ_m e^{−m²/2d²}, f½ = Σ_m e^{−(m+½)²/2d²}; two of the four
    I←I probabilities are α·f0 > 1, so s_ii = (α·f0 − 1)/(α·(f0 + f½))."""
    alpha, d = 0.9685, 0.35
    f0 = sum(math.exp(-(m**2) / (2 * d**2)) for m in range(-6, 7))
    f_half = sum(math.exp(-((m + 0.5) ** 2) / (2 * d**2)) for m in range(-6, 7))
    hand = (alpha * f0 - 1) / (alpha * (f0 + f_half))
    assert 0 < hand <= MAX_CLIPPED_SHARE and alpha * f_half < 1
    c = Config(**_tiny_ii_clip(alpha))
    assert c.clipping()["ii"] == pytest.approx((alpha * f0, hand), rel=1e-9)  # before any draw
    with caplog.at_level(logging.WARNING, logger="spectrum"):
        data = EINetworkData(c, str(tmp_path), seed=0)
        data.setup("fit")
        data.setup("fit")
    clipped = [r for r in caplog.records if "clipped at 1" in r.getMessage()]
    assert len(clipped) == 1 and "block ii" in clipped[0].getMessage()  # said once
    module = EINetworkModule(c)
    module.info = data.info
    pm = module.paper_metrics()
    assert pm["clipped_share_ii"] == pytest.approx(hand, rel=1e-9)   # measured on the draw's p
    assert pm["clipped_share"] == pm["clipped_share_ii"]
    assert pm["clipped_share_ee"] == pm["clipped_share_ie"] == pm["clipped_share_ei"] == 0.0
    assert pm["max_connection_prob"] == pytest.approx(alpha * f0, rel=1e-12)
    with pytest.raises(ConfigError, match=r"block ii .* peaks at 1\.0\d+ > 1"):
        Config(**_tiny_ii_clip(0.99))  # s_ii = 1.3e-2


@pytest.mark.parametrize("dim, n_exc, preset", [(2, 1600, "wave"), (2, 2500, "chaos"),
                                                (1, 400, "chaos"), (2, 400, "bump")])
def test_share_before_the_draw_equals_the_share_of_the_drawn_probabilities(dim, n_exc, preset):
    """`block_clipping` (offset profile, no N×N matrix) = Σ max(p − 1, 0)/Σ p on the full p."""
    c = Config(preset=preset, dim=dim, n_exc=n_exc, range_scale=5.0 if n_exc == 400 and dim == 2
               else None, density=0.9 if n_exc == 400 and dim == 2 else None)
    sides = {"e": c.side_exc, "i": c.side_inh}
    for blk, width in c.ranges().items():
        p = connection_prob(sides[blk[0]], sides[blk[1]], width, c.density, dim)
        peak, share = block_clipping(sides[blk[0]], sides[blk[1]], width, c.density, dim)
        assert peak == pytest.approx(float(p.max()), rel=1e-12)
        assert share == pytest.approx(clipped_share_of(p), rel=1e-9, abs=1e-15), blk


def test_compare_with_a_zero_theory_radius_is_nan_with_a_reason():
    evals = np.array([0.1 + 0.0j, -0.05 + 0.02j, -0.05 - 0.02j])
    out = compare(evals, np.zeros(0, dtype=complex), 0.0, 0j)
    assert math.isnan(out["bulk_radius_rel_error"])
    assert "theory bulk radius is 0" in out["bulk_radius_rel_error_reason"]
    ok = compare(evals, np.zeros(0, dtype=complex), 0.1, 0j)
    assert ok["bulk_radius_rel_error"] == pytest.approx(abs(ok["bulk_radius_empirical"] - 0.1)
                                                         / 0.1)
    assert ok["bulk_radius_rel_error_reason"] is None


def test_compare_and_the_eigenvalue_helpers_by_hand():
    """Spectrum (3, −2.1, 0.5 + 0.5i, −0.4, 0.2i, 0.1), outliers predicted at 2.9 and −2: each
    is matched to its own eigenvalue (distance 0.1 each); the bulk radius is the 99th percentile
    of the other four moduli, 0.4 + 0.97·(√½ − 0.4) = 0.69789, its error vs R_th = 1 is 0.30211;
    λ* = −2 is matched to −2.1; 2 eigenvalues lie outside |λ| = 1. Without predictions the top
    eigenvalue is the one of largest Re. dense/sparse eigenvalues of known matrices; the
    packed form is a bit-exact (n, 2) float64 [Re, Im]."""
    evals = np.array([3.0, -2.1, 0.5 + 0.5j, -0.4, 0.2j, 0.1])
    out = compare(evals, np.array([2.9 + 0j, -2.0 + 0j]), 1.0, -2.0 + 0j)
    r_emp = 0.4 + 0.97 * (math.sqrt(0.5) - 0.4)
    assert out["bulk_radius_empirical"] == pytest.approx(r_emp)
    assert out["bulk_radius_rel_error"] == pytest.approx(1.0 - r_emp)
    assert out["bulk_radius_rel_error_reason"] is None
    assert out["top_outlier_empirical"] == pytest.approx(-2.1)
    assert out["top_outlier_distance"] == pytest.approx(0.1)
    assert out["outlier_max_distance"] == pytest.approx(0.1)
    assert out["outlier_mean_distance"] == pytest.approx(0.1)
    assert (out["n_outliers_theory"], out["n_outliers_empirical"]) == (2, 2)
    assert match_outliers(np.array([-2.0 + 0j, 2.9 + 0j]), evals)[0].tolist() == [1, 0]
    given = compare(evals[::-1].copy(), np.zeros(0, dtype=complex), 0.5, 0j, bulk_radius=0.6)
    assert given["bulk_radius_empirical"] == 0.6
    assert given["bulk_radius_rel_error"] == pytest.approx(0.2)
    assert given["top_outlier_empirical"] == 3.0 and given["outlier_max_distance"] == 0.0
    assert given["outlier_mean_distance"] == 0.0
    every = compare(evals, np.zeros(0, dtype=complex), 0.5, 0j)  # nothing excluded
    assert every["bulk_radius_empirical"] == pytest.approx(2.1 + 0.95 * (3.0 - 2.1))
    single = compare(evals, np.array([2.9 + 0j]), 1.0, 2.9 + 0j)  # one outlier matched too
    assert single["outlier_max_distance"] == pytest.approx(0.1)
    assert single["bulk_radius_empirical"] == pytest.approx(0.7071 + 0.96 * (2.1 - 0.7071),
                                                            abs=1e-4)
    assert relative_error(1.5, 2.0) == 0.25 and relative_error(-1.0, -2.0) == 0.5
    assert math.isnan(relative_error(1.0, 0.0)) and math.isnan(relative_error(1.0, math.inf))
    rot = dense_eigenvalues(torch.tensor([[0.0, 1.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"^J has non-finite"):
        dense_eigenvalues(torch.full((2, 2), float("nan")))
    assert rot.dtype == torch.complex128
    assert sorted(rot.imag.tolist()) == pytest.approx([-1.0, 1.0])
    assert rot.real.abs().max() < 1e-12
    d = torch.linspace(-1.0, 0.5, 50, dtype=torch.float64)
    d[10] = 4.0
    top, radius = sparse_eigenvalues(torch.diag(d), 3, 50, 40, seed=0)
    assert top.dtype == torch.complex128
    assert sorted(top.real.abs().tolist()) == pytest.approx(sorted(d.abs().tolist())[-3:])
    assert radius == pytest.approx(float(torch.quantile(d.abs(), 0.99)))
    assert sparse_eigenvalues(torch.diag(d), 1, 50, 40, seed=0)[0].numel() == 1
    assert sparse_eigenvalues(torch.diag(d), 50, 50, 40, seed=0)[0].numel() == 48  # k ≤ n − 2
    j32 = torch.diag(d).float()
    top32 = sparse_eigenvalues(j32, 3, 50, 40, seed=0)[0]  # ARPACK in float64
    top64 = sparse_eigenvalues(j32.double(), 3, 50, 40, seed=0)[0]
    assert torch.allclose(top32.real.sort().values, top64.real.sort().values, rtol=1e-12, atol=0)
    # a subset of 25 of 50 units keeps the E:I proportion (20 E at |λ| = 0.5, 5 I at 2): its
    # 99th percentile is 2, rescaled by √(50/25)
    ei = torch.diag(torch.cat([torch.full((40,), 0.5), torch.full((10,), 2.0)]).double())
    assert sparse_eigenvalues(ei, 2, 25, 40, seed=0)[1] == pytest.approx(2 * math.sqrt(2))
    # the subset is drawn from the seed (distinct moduli: another draw moves the radius; the
    # largest moduli in E, then in I, so that either population's draw shows)
    for values in (torch.linspace(1.0, 0.1, 50), torch.linspace(0.1, 1.0, 50)):
        spread = torch.diag(values.double())
        assert len({sparse_eigenvalues(spread, 1, 10, 40, seed=3)[1] for _ in range(4)}) == 1
    z = torch.tensor([1.0 + 2.0j, -0.5j], dtype=torch.complex64)
    packed = pack_eigenvalues(z)
    assert packed.dtype == torch.float64 and packed.tolist() == [[1.0, 2.0], [0.0, -0.5]]
    assert torch.equal(unpack_eigenvalues(packed), z.to(torch.complex128))
    assert unpack_eigenvalues(packed.float()).dtype == torch.complex128


def test_a_valid_config_with_zero_theory_radius_runs(tmp_path):
    """g = 0 and ḡ = 0: J = 0, R_th = 0; the run completes and says why R's error is undefined."""
    cfg = compose_config([*RING[:2], "task.n_exc=400", "logger=csv", "callbacks=none",
                          "task.g_het=0", "task.gbar_ee=0", "task.gbar_ie=0", "task.gbar_ei=0",
                          "task.gbar_ii=0", "task.t_total=100", "task.burn_in=50"],
                         tmp_path / "r", tmp_path / "d")
    res = run(cfg)
    assert res["status"] == "completed", res.get("error")
    pm = res["paper_metrics"]
    assert pm["bulk_radius_theory"] == 0.0 and pm["predicted_regime"] == "stable"
    rel = pm["bulk_radius_rel_error"]
    assert rel is None or math.isnan(rel)
    assert "undefined" in pm["bulk_radius_rel_error_reason"]


def test_summary_does_not_label_a_row_by_a_regime_the_theory_does_not_predict():
    """The wave preset at N_E = 1,600 predicts (and here observes) stable: not a 'wave' row."""
    rows = []
    for preset, n in (("wave", 2500), ("wave", 1600)):
        c = Config(preset=preset, n_exc=n)
        th = theory_from_config(c)
        rows.append({"status": "completed", "seed": 0, "params": resolved_params(c),
                     "paper_metrics": {"predicted_regime": th.regime,
                                       "observed_regime": th.regime,
                                       "clipped_share": c.clipping()["ei"][1]}})
    table = summarize(rows).set_index("n_exc")
    assert table.loc[2500, "preset"] == "wave"
    assert table.loc[1600, "preset"] == "wave params (theory: stable)"
    assert table.loc[1600, "predicted"] == table.loc[1600, "observed"] == "stable"
    assert table.loc[1600, "clipped_share"] == pytest.approx(1.64e-4, rel=0.01)
    text = notes(summary=table.reset_index())
    assert "wave params (theory: stable)" in text and "Clipping p at 1 removed up to" in text


def test_phase_map_leaves_refused_configs_blank():
    c = Config(preset="bump", dim=1, n_exc=800)
    results = [{"status": "completed", "params": resolved_params(c)}]
    ranges = np.array([0.07, 0.3])  # d_II ×2: 0.14 fits, 0.6 clips most of K_II
    regimes = _theory_map(results, ["range_ii", "gbar_ee"], [ranges, np.array([9.0])])
    assert not math.isnan(regimes[0, 0]) and math.isnan(regimes[0, 1])


# ------------------------------------------------------------------ theory
def _mean_matrix(c: Config) -> torch.Tensor:
    sides, n = {"e": c.side_exc, "i": c.side_inh}, {"e": c.n_exc, "i": c.n_inh}
    blocks = {}
    for blk in ("ee", "ie", "ei", "ii"):
        p = connection_prob(sides[blk[0]], sides[blk[1]], c.ranges()[blk], c.density, c.dim)
        blocks[blk] = p * c.gbar()[blk] / in_degree(c.density, c.ranges()[blk], n[blk[1]], c.dim)
    return torch.cat([torch.cat([blocks["ee"], blocks["ei"]], 1),
                      torch.cat([blocks["ie"], blocks["ii"]], 1)])


@pytest.mark.parametrize("dim, n_exc, preset", [(1, 400, "wave"), (2, 400, "bump"),
                                                (2, 400, "global_osc")])
def test_outliers_are_the_eigenvalues_of_the_mean_matrix(dim, n_exc, preset):
    """E[J] is block-circulant: its eigenvalues are exactly λ±(n), one copy per wave vector."""
    c = Config(preset=preset, dim=dim, n_exc=n_exc, range_scale=4.0 if dim == 2 else 3.0)
    th = theory_from_config(c)
    evals = torch.linalg.eigvals(_mean_matrix(c)).numpy()
    _, dist = match_outliers(th.lambdas[np.abs(th.lambdas) > 0.05], evals)
    assert dist.max() < 1e-8
    # and no eigenvalue of E[J] outside |λ| = 0.05 is missing from λ±(n) (every copy counted)
    assert int((np.abs(evals) > 0.05).sum()) == int((np.abs(th.lambdas) > 0.05).sum())


def test_wave_vectors_are_every_integer_vector_of_the_cube():
    """[−n, n]^dim holds (2n + 1)^dim integer vectors, each once, closed under n → −n (the
    spec: every wave vector is its own copy, no degeneracy factor)."""
    for dim, n_max in ((1, 3), (2, 2), (2, 5)):
        vec = wave_vectors(n_max, dim)
        assert vec.shape == ((2 * n_max + 1) ** dim, dim)
        as_set = {tuple(v) for v in vec}
        assert len(as_set) == len(vec) and as_set == {tuple(-v) for v in vec}
        assert int(np.abs(vec).max()) == n_max


@pytest.mark.parametrize("dim, n_exc, preset", [(1, 800, "bump"), (1, 800, "chaos"),
                                                (2, 400, "wave")])
def test_bulk_variance_equals_the_row_variance_sum_of_the_drawn_law(dim, n_exc, preset):
    """S_ab = K_ab[(1 − K_ab/c_ab)J̄² + σ²] (theory, wrapped ∫G²) equals the direct sum
    Σ_j Var(J_ij) = Σ_j [p_ij(μ² + s²) − p_ij²μ²] (μ = ḡ/K, s² = g²/K) over the probability
    matrix the draw uses, averaged over rows i; R = √λ_max(S) likewise."""
    c = Config(preset=preset, dim=dim, n_exc=n_exc, range_scale=4.0 if dim == 2 else None)
    sides, n = {"e": c.side_exc, "i": c.side_inh}, {"e": c.n_exc, "i": c.n_inh}
    direct = np.zeros((2, 2))
    for blk in ("ee", "ie", "ei", "ii"):
        prob = connection_prob(sides[blk[0]], sides[blk[1]], c.ranges()[blk], c.density,
                               dim).clamp(max=1.0).numpy()
        k = in_degree(c.density, c.ranges()[blk], n[blk[1]], dim)
        mu, var = c.gbar()[blk] / k, c.g_het**2 / k
        direct["ei".index(blk[0]), "ei".index(blk[1])] = float(
            (prob * (mu**2 + var) - prob**2 * mu**2).sum(1).mean())
    s = bulk_variance_matrix(c.gbar(), c.ranges(), c.g_het, c.density, n, dim)
    assert s == pytest.approx(direct, rel=1e-6)
    radius = bulk_radius(c.gbar(), c.ranges(), c.g_het, c.density, n, dim)
    assert radius == pytest.approx(math.sqrt(max(np.linalg.eigvals(direct).real)), rel=1e-6)


@pytest.mark.parametrize("width", [0.02, 0.1, 0.34])
def test_kernel_overlap_equals_the_integral_of_the_squared_density(width):
    """∫_0^1 G_d(x)² dx by the trapezoid rule on 20,000 points (G = Σ_m N(x + m; 0, d²), the
    images summed here), against the wrapped value (squared in 2D); and the unwrapped closed
    form 1/(2√π d) against the integral over the real line at small d."""
    x = np.arange(20_000) / 20_000
    dens = sum(np.exp(-((x + m) ** 2) / (2 * width**2)) for m in range(-5, 6))
    dens /= math.sqrt(2 * math.pi) * width
    integral = float((dens**2).mean())  # periodic trapezoid rule
    assert kernel_overlap(width, 1) == pytest.approx(integral, rel=1e-9)
    assert kernel_overlap(width, 2) == pytest.approx(integral**2, rel=1e-9)
    line = np.linspace(-12 * width, 12 * width, 200_001)
    gauss = np.exp(-(line**2) / (2 * width**2)) / (math.sqrt(2 * math.pi) * width)
    on_line = float((gauss**2).sum() * (line[1] - line[0]))
    assert kernel_overlap(width, 1, wrapped=False) == pytest.approx(on_line, rel=1e-9)
    assert kernel_overlap(width, 2, wrapped=False) == pytest.approx(on_line**2, rel=1e-9)


def test_predicted_frequency_equals_the_linearised_oscillation():
    """The k = 0 mode is a 2-unit (E, I) network with couplings M(0) = [[ḡ_EE, ḡ_EI],
    [ḡ_IE, ḡ_II]]. With ḡ = (2.8, 6, −3, −1) its λ* = 0.9 ± 3.793i (Re < 1: damped);
    simulated at amplitude 1e-3 (φ ≈ identity), τ dx/dt = (M − 1)x rings at Im λ*/2π per τ:
    the theory's frequency (0.6037) must equal the simulated dominant frequency within 2%
    (FFT bin 1/(T/τ) = 0.005 per τ, the peak's width 0.1/(2π) ≈ 0.016)."""
    gbar = {"ee": 2.8, "ie": 6.0, "ei": -3.0, "ii": -1.0}
    ranges = dict.fromkeys(gbar, 0.05)
    th = theory(gbar, ranges, 0.0, 0.95, {"e": 1600, "i": 400}, 1, 2)
    assert th.lambda_star.real == pytest.approx(0.9) and th.complex_star
    m0 = mode_matrix(np.zeros(1), gbar, ranges)[0]
    rec = simulate(torch.tensor(m0, dtype=torch.float64), 1, tau=20.0, dt=0.2, t_total=4000.0,
                   record_every=5, noise_std=0.0, inh_gain_scale=5.0, init_low=1e-3,
                   init_high=2e-3, seed=0)
    freq, _ = dominant_frequency(rec.x[:, :1], 1, frame_dt=1.0, tau=20.0)
    assert th.frequency == pytest.approx(freq, rel=0.02)
    assert th.frequency == pytest.approx(abs(th.lambda_star.imag) / (2 * math.pi))


def test_bulk_formula_reduces_to_the_2d_closed_form():
    c = Config(preset="bump")
    s = bulk_variance_matrix(c.gbar(), c.ranges(), c.g_het, c.density,
                             {"e": c.n_exc, "i": c.n_inh}, 2, wrapped=False)
    n_pre = {"e": c.n_exc, "i": c.n_inh}
    for blk, (a, b) in {"ee": (0, 0), "ei": (0, 1), "ie": (1, 0), "ii": (1, 1)}.items():
        k = in_degree(c.density, c.ranges()[blk], n_pre[blk[1]], 2)
        closed = c.gbar()[blk] ** 2 * (1 - c.density / 2) / k + c.g_het**2
        assert s[a, b] == pytest.approx(closed, rel=1e-12)


def test_theory_rule_on_constructed_spectra():
    vec = np.array([[0], [0], [2], [2]])
    cplx = np.array([False, False, True, True])
    lam = np.array([1.5, 0.2, 1.2 + 0.5j, 1.2 - 0.5j])
    assert classify_theory(lam, vec, cplx, 0.5)[0] == "global_sync"
    assert classify_theory(lam, vec, cplx, 1.1)[0] == "chaos"
    lam2 = np.array([0.9, 0.2, 1.2 + 0.5j, 1.2 - 0.5j])
    assert classify_theory(lam2, vec, cplx, 0.5)[0] == "wave"
    assert classify_theory(lam2.real.astype(complex), vec, np.zeros(4, bool), 0.5)[0] == "bump"
    assert classify_theory(np.array([0.9, 0.1, 0.5, 0.5]), vec, np.zeros(4, bool),
                           0.5)[0] == "stable"


def test_theory_fields_rule_boundaries_and_the_nyquist_cap():
    """No λ outside the bulk: stable, λ* the largest Re λ (index 0). R = 1 exactly is chaos.
    M(0) = diag(1, 0.5) has discriminant 0.25 > 0: real. theory() keeps R of its own (wrapped
    by default; wide ranges 0.4 make wrapping matter) and 2-D sizes, all 25 vectors of
    [−2, 2]² twice, and n* = 0 for the k = 0 pair 0.9 ± 3.79i; outliers_tensor is complex128.
    theory_from_config caps n_max at the Nyquist index (side_inh − 1)//2 = 49 (side 99)."""
    vec = np.array([[0], [1], [2], [2]])
    lam = np.array([0.3, 0.2, 0.1 + 0.4j, 0.1 - 0.4j])
    cplx = np.array([False, False, True, True])
    assert classify_theory(lam, vec, cplx, 0.6) == ("stable", 0)
    assert classify_theory(lam, vec, cplx, 1.0)[0] == "chaos"
    assert classify_theory(np.array([1.0, 0.2, 0.1, 0.1]), vec, np.zeros(4, bool),
                           0.5)[0] == "global_sync"  # Re λ* = 1 is not below the line
    diag = {"ee": 1.0, "ie": 0.0, "ei": 0.0, "ii": 0.5}
    lp, lm, is_c = mode_eigenvalues(np.zeros(1), diag, dict.fromkeys(diag, 0.1))
    assert (float(lp[0].real), float(lm[0].real), bool(is_c[0])) == (1.0, 0.5, False)
    gbar = {"ee": 2.8, "ie": 6.0, "ei": -3.0, "ii": -1.0}
    ranges = dict.fromkeys(gbar, 0.4)
    n_pop = {"e": 1600, "i": 400}
    th = theory(gbar, ranges, 0.5, 0.95, n_pop, 2, 2)
    wrapped = bulk_radius(gbar, ranges, 0.5, 0.95, n_pop, 2, True)
    assert th.radius == wrapped and th.radius < 0.71
    assert abs(wrapped - bulk_radius(gbar, ranges, 0.5, 0.95, n_pop, 2, False)) > 1e-3
    assert abs(wrapped - bulk_radius(gbar, ranges, 0.5, 0.95, n_pop, 1, True)) > 1e-5
    unwrapped = theory(gbar, ranges, 0.5, 0.95, n_pop, 2, 2, wrapped=False)
    assert unwrapped.radius == bulk_radius(gbar, ranges, 0.5, 0.95, n_pop, 2, False)
    assert th.wave_vectors.shape == (50, 2) and th.k_star.tolist() == [0, 0]
    assert th.lambda_star == pytest.approx(0.9 + 3.79341535j)
    out = outliers_tensor(th)
    assert out.dtype == torch.complex128 and np.allclose(out.numpy(), th.outliers)
    assert np.allclose(sorted(out.numpy().imag), [-3.79341535, 3.79341535])
    c = Config(preset="wave", dim=1, n_exc=396, range_scale=3.0, n_max_wave=100)
    assert c.side_inh == 99 and theory_from_config(c).wave_vectors.max() == 49


def test_paper_presets_get_the_paper_labels_at_every_size():
    for dim, n in ((2, 40_000), (2, 2500), (1, 800)):
        for preset in PRESETS:
            assert theory_from_config(Config(preset=preset, dim=dim, n_exc=n)).regime == preset


# ------------------------------------------------------------------ order parameters
def test_order_parameters_on_constructed_patterns():
    t = torch.arange(200, dtype=torch.float64)[:, None, None] * 2.0
    x = torch.arange(40, dtype=torch.float64) / 40
    xx, yy = torch.meshgrid(x, x, indexing="ij")
    uniform = torch.full((200, 40, 40), 0.8, dtype=torch.float64)
    assert global_sync(uniform, 2) == pytest.approx(1.0)
    bump = torch.tanh(3 * torch.cos(2 * math.pi * xx)).expand(200, 40, 40)
    assert moran_i(bump, 2) > 0.8 and local_sync(bump, 2) > 0.6
    assert global_sync(bump, 2) < 0.05
    assert dominant_wavevector(bump, 2)[1] == pytest.approx(1.0)
    f = 0.3  # cycles per τ, τ = 20
    wave = torch.cos(2 * math.pi * (xx + 2 * yy) - 2 * math.pi * f * t / 20.0)
    freq, osc = dominant_frequency(wave, 2, frame_dt=2.0, tau=20.0)
    assert freq == pytest.approx(f, rel=0.03) and osc > 0.9
    assert dominant_wavevector(wave, 2)[1] == pytest.approx(math.sqrt(5))
    noise = torch.randn(50, 40, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(moran_i(noise, 2)) < 0.02


def test_classifier_uses_the_frozen_thresholds():
    base = {"mean_activity": 0.5, "global_sync": 0.02, "local_sync": 0.1, "moran_i": 0.01,
            "temporal_std": 0.4, "population_std": 0.01}
    assert classify(base, THRESHOLDS) == "chaos"
    assert classify({**base, "mean_activity": 0.05}, THRESHOLDS) == "stable"
    assert classify({**base, "global_sync": 0.9, "population_std": 0.5}, THRESHOLDS) == "global_osc"
    assert classify({**base, "global_sync": 0.9, "population_std": 0.0}, THRESHOLDS) == "global_sync"
    pattern = {**base, "local_sync": 0.7, "moran_i": 0.6}
    assert classify({**pattern, "temporal_std": 0.05}, THRESHOLDS) == "bump"
    assert classify(pattern, THRESHOLDS) == "wave"


def test_divergence_is_reported_not_classified():
    j = torch.full((5, 5), 3e38, dtype=torch.float32)
    rec = simulate(j, 4, tau=20.0, dt=0.2, t_total=20.0, record_every=1, noise_std=0.0,
                   inh_gain_scale=5.0, init_low=1.0, init_high=2.0, seed=0, chunk=10)
    assert rec.diverged
    c = Config(dim=1, n_exc=4, t_total=20.0, burn_in=0.0, record_every=1, n_max_wave=1,
               range_scale=1.0)  # the automatic ×400 at N_E = 4 is refused (clipping rule)
    out = observe(rec, c)
    assert out["observed_regime"] == "diverged" and "global_sync" not in out


# ------------------------------------------------------------------ runs on the ring (1D)
def test_smoke_run_writes_results_and_caches_the_eigendecomposition(ring_runs, tmp_path,
                                                                      monkeypatch):
    res = ring_runs["stable"]
    assert res["status"] == "completed"
    run_dir = Path(res["run_dir"])
    assert (run_dir / "results.json").exists() and (run_dir / "metrics.csv").exists()
    pm = json.loads((run_dir / "results.json").read_text())["paper_metrics"]
    for key in ("predicted_regime", "observed_regime", "bulk_radius_theory",
                "bulk_radius_empirical", "top_outlier_theory", "top_outlier_empirical",
                "global_sync", "local_sync", "moran_i", "temporal_std"):
        assert pm[key] is not None, key
    assert len(pm["top_outlier_empirical"]) == 2 and math.isfinite(pm["bulk_radius_empirical"])
    assert pm["clipped_share"] == 0.0 and pm["bulk_radius_rel_error_reason"] is None
    # the eigenvalues live in the task's one cache (data dir), beside the draw
    data_dir = run_dir.parent / "data"
    assert list((data_dir / "ei_network").glob("eigvals-*.safetensors"))

    def refuse(j):
        raise AssertionError("recomputed cached eigenvalues")

    monkeypatch.setattr("tasks.ei_network.module.dense_eigenvalues", refuse)
    again = run(compose_config([*RING, "task.preset=stable", "task.t_total=100",
                                "task.burn_in=50"], tmp_path / "again", data_dir))
    assert again["status"] == "completed"
    assert again["paper_metrics"]["bulk_radius_empirical"] == pm["bulk_radius_empirical"]


@pytest.mark.parametrize("preset", ["stable", "bump", "chaos"])
def test_bulk_radius_within_5_percent_on_the_ring(ring_runs, preset):
    pm = ring_runs[preset]["paper_metrics"]
    assert pm["bulk_radius_rel_error"] < 0.05, (pm["bulk_radius_theory"],
                                                pm["bulk_radius_empirical"])


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="finding: on the 1D ring at N_E = 800 (ranges ×2) the "
                   "finite-K fluctuations move outliers by 0.12–0.15 (bump 0.149, stable 0.117, "
                   "chaos 0.122 at seed 0); the 0.1 claim holds in 2D at N_E = 2,500 (slow test)")
def test_outliers_matched_within_0_1_on_the_ring(ring_runs):
    worst = {p: r["paper_metrics"]["outlier_max_distance"] for p, r in ring_runs.items()}
    assert max(worst.values()) < 0.1, worst


def first_order_scatter(c: Config) -> np.ndarray:
    """Return σ_λ per predicted outlier: the RMS first-order shift of λ±(n) by the random part
    Δ = J − E[J] (independent entries, Var Δ_ij = p_ij(μ² + s²) − p_ij²μ²).

    With ρ and ℓ̃ the right and left eigenvectors of M(k) for λ, the Fourier eigenvectors of
    E[J] are r_i = ρ_a e^{2πin·x_i}, ℓ_i = ℓ̃_a e^{−2πin·x_i}/N_a (i in population a), so
    σ_λ² = E|ℓᵀΔr|²/|ℓᵀr|² = Σ_ab (|ℓ̃_a|²/N_a) S_ab |ρ_b|² / |ℓ̃ᵀρ|², S_ab = Σ_j Var(J_ij)
    (the bulk variance matrix, checked against the drawn law above).
    """
    th = theory_from_config(c)
    s = bulk_variance_matrix(c.gbar(), c.ranges(), c.g_het, c.density,
                             {"e": c.n_exc, "i": c.n_inh}, c.dim)
    n_pop = np.array([c.n_exc, c.n_inh], dtype=float)
    out = []
    for lam, vec in zip(th.outliers, th.wave_vectors[th.outlier_mask]):
        m = mode_matrix(np.array([2 * math.pi * np.linalg.norm(vec)]), c.gbar(), c.ranges())[0]
        w_r, v_r = np.linalg.eig(m)
        w_l, v_l = np.linalg.eig(m.T)
        rho, ell = v_r[:, np.argmin(abs(w_r - lam))], v_l[:, np.argmin(abs(w_l - lam))]
        var = np.sum((np.abs(ell) ** 2 / n_pop)[:, None] * s * (np.abs(rho) ** 2)[None, :])
        out.append(math.sqrt(var) / abs(ell @ rho))
    return np.array(out)


@pytest.mark.parametrize("preset", ["stable", "bump", "chaos"])
def test_outlier_distances_match_the_first_order_finite_k_scatter(ring_runs, preset):
    """The outliers of J sit where the theory says up to the finite-K scatter, whose size the
    theory gives too: the mean match distance over a preset's outliers is within a factor 2 of
    the RMS first-order shift σ_λ (`first_order_scatter`: stable 0.057, bump 0.106, chaos
    0.084 at N_E = 800). Why [0.5, 2]: E|δλ|/σ is 0.89 for a complex Gaussian shift, about 1.1–1.3
    for the eigenvalues of the 2×2 perturbation of a degenerate pair (±n), and a mean over 8–12
    outliers adds ±30%; measured ratios 0.98 (bump), 1.20 (chaos), 1.55 and 1.06 (stable,
    seeds 0 and 1). The bound is 2σ_λ ≈ 0.11–0.21 on the mean distance: outliers displaced
    further than that on average (a wrong M(k)) fail it."""
    pm = ring_runs[preset]["paper_metrics"]
    sigma = first_order_scatter(Config(preset=preset, dim=1, n_exc=800))
    assert sigma.size == pm["n_outliers_theory"]
    ratio = pm["outlier_mean_distance"] / math.sqrt(float((sigma**2).mean()))
    assert 0.5 < ratio < 2.0, (pm["outlier_mean_distance"], sigma)


@pytest.mark.parametrize("preset", ["stable", "bump", "chaos"])
def test_predicted_regime_equals_simulated_regime_on_the_ring(ring_runs, preset):
    pm = ring_runs[preset]["paper_metrics"]
    assert pm["predicted_regime"] == preset
    assert pm["observed_regime"] == preset, {k: pm[k] for k in (
        "mean_activity", "global_sync", "local_sync", "moran_i", "temporal_std")}


RING_SEEDS = (0, 1, 2)
# the order parameters that decide each label (order.classify), with the side of the threshold
# the label needs: +1 above, −1 below
DECIDING = {"stable": [("mean_activity", "thr_activity", -1)],
            "chaos": [("mean_activity", "thr_activity", +1),
                      ("global_sync", "thr_global_sync", -1),
                      ("local_sync", "thr_local_sync", -1),
                      ("temporal_std", "thr_static", +1)],
            "bump": [("mean_activity", "thr_activity", +1),
                     ("global_sync", "thr_global_sync", -1),
                     ("local_sync", "thr_local_sync", +1), ("moran_i", "thr_moran", +1),
                     ("temporal_std", "thr_static", -1)]}


@pytest.fixture(scope="module")
def ring_seed_ops(ring_runs):
    """Order parameters and observed regime of stable, bump and chaos on the ring (N_E = 800)
    for seeds 0–2: seed 0 from `ring_runs`, seeds 1 and 2 simulated here (no eig)."""
    out = {}
    for preset in DECIDING:
        out[preset] = [ring_runs[preset]["paper_metrics"]]
        c = Config(preset=preset, dim=1, n_exc=800)
        for seed in RING_SEEDS[1:]:
            out[preset].append(observe(run_dynamics(c, draw_j(c, seed)[0], seed), c))
    return out


def _claim_regime_over_seeds(ops: list[dict], preset: str) -> None:
    """Assert every seed observes `preset` and each deciding order parameter's seed mean lies
    on the label's side of its threshold by more than 3 standard errors (sd/√3)."""
    observed = [o["observed_regime"] for o in ops]
    for key, thr, side in DECIDING[preset]:
        values = np.array([o[key] for o in ops])
        margin = side * (values.mean() - THRESHOLDS[thr])
        assert margin > 3 * values.std(ddof=1) / math.sqrt(len(values)), (key, values)
    assert observed == [preset] * len(ops), observed


@pytest.mark.parametrize("preset", ["stable", "chaos"])
def test_claim_ring_regime_follows_the_spectrum_over_seeds(ring_seed_ops, preset):
    """Claim 2 (the spectrum predicts the regime) on the ring at N_E = 800, seeds 0–2: the
    predicted label is observed in every seed, each deciding order parameter clear of its
    frozen threshold by more than 3 standard errors of its seed mean. Measured (seeds 0–2):
    stable mean |φ| 0.068, 0.069, 0.068 (threshold 0.1: below); chaos mean |φ| 0.61, 0.62, 0.59,
    global sync 0.04, 0.06, 0.13 (< 0.5), local sync 0.29, 0.30, 0.33 (< 0.4), temporal std
    0.61, 0.32, 0.44 (≥ 0.15)."""
    _claim_regime_over_seeds(ring_seed_ops[preset], preset)


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README ei_network, finding 3): on the ring at N_E = 800 (T = 1,000) the bump "
    "preset's static pattern holds only for seed 0; seeds 1 and 2 travel (temporal std 0.192, 0.429 > 0.15, "
    "observed wave), seed 0 0.132; a second unstable mode (1.086 ± 0.62i, n = 2) competes"))
def test_claim_ring_bump_is_static_over_seeds(ring_seed_ops):
    """Claim 2 for the bump preset on the ring, seeds 0–2 (as the stable and chaos test)."""
    _claim_regime_over_seeds(ring_seed_ops["bump"], "bump")


def test_spectral_reference_and_matrices(ring_runs):
    from tasks.ei_network.module import EINetworkModule

    module = EINetworkModule(Config(preset="bump", dim=1, n_exc=800))
    ref = module.spectral_reference()["J"]
    assert ref["outliers"].is_complex() and (ref["outliers"].abs() > ref["radius"]).all()
    assert ref["radius"] == pytest.approx(ring_runs["bump"]["paper_metrics"]["bulk_radius_theory"])
    assert module.spectral_matrices() == {}  # J arrives with the data module in setup


def test_infer_mode_recovers_the_regime_of_a_recording(tmp_path):
    cfg = compose_config([*RING, "task.preset=bump", "task.mode=infer", "task.eig_method=none"],
                         tmp_path / "r", tmp_path / "d")
    pm = run(cfg)["paper_metrics"]
    assert pm["recovered_regime"] == pm["observed_regime"] == "bump"
    assert pm["gbar_rel_error"] < 0.1 and pm["range_rel_error"] < 0.1
    assert pm["recovered_bulk_radius_rel_error"] < 0.05
    # the fit is as good as the truth: the loss of the true (ḡ, d), an independent value, on
    # the same train and held-out frames (seed 0: train 0.4966 vs fitted 0.4952, held-out
    # 0.7142 vs 0.7114); the fit minimises the train loss, so it may not exceed the truth's
    # there, and it may not generalise worse than the truth by more than 0.01 (its parameters
    # are 5% off, which moves the loss by 0.003)
    c = Config(preset="bump", dim=1, n_exc=800, mode="infer", eig_method="none")
    data = EINetworkData(c, str(tmp_path / "d"), seed=0)
    data.setup("fit")
    u, phi = observed_input(data.recording.x, c.dt * c.record_every, c.tau, c.n_exc,
                            c.inh_gain_scale)
    n_train = max(1, int(round(c.infer_train_frac * u.shape[0])))
    true_g = torch.tensor([c.gbar()[b] for b in POPS], dtype=torch.float64)
    true_d = torch.tensor([c.ranges()[b] for b in POPS], dtype=torch.float64)
    truth = {split: float(MeanFieldFit(u[sl], phi[sl], c.n_exc, c.side_exc, c.side_inh,
                                       c.dim).loss(true_g, true_d))
             for split, sl in (("train", slice(None, n_train)), ("heldout", slice(n_train, None)))}
    assert pm["fit_loss_train"] <= truth["train"] + 1e-4, truth
    assert pm["fit_loss_heldout"] <= truth["heldout"] + 0.01, truth


def test_summarize_notes_and_plots(tmp_path):
    results = []
    for gee in (7.0, 12.0):
        for gie in (8.0, 14.0):
            c = Config(preset="bump", dim=1, n_exc=800, gbar_ee=gee, gbar_ie=gie)
            th = theory_from_config(c)
            pm = {"predicted_regime": th.regime,
                  "observed_regime": th.regime if gee < 10 else "chaos",
                  "top_outlier_theory": [1.0, 0.0], "top_outlier_empirical": None,
                  "predicted_frequency": th.frequency, "dominant_frequency": th.frequency,
                  "predicted_wavenumber": th.wavenumber, "dominant_wavenumber": th.wavenumber}
            results.append({"status": "completed", "seed": 0, "params": resolved_params(c),
                            "paper_metrics": pm})
    results.append({"status": "failed", "seed": 1, "params": resolved_params(c),
                    "paper_metrics": {}})
    table = summarize(results)
    assert len(table) == 4 and table["match"].sum() == 2
    assert {"gbar_ee", "gbar_ie"} <= set(table) and "gbar_ei" not in set(table)  # varying only
    # a row is labelled by its preset only where the theory predicts the preset's regime
    for label, predicted in zip(table["preset"], table["predicted"]):
        assert label == ("bump" if predicted == "bump" else f"bump params (theory: {predicted})")
    assert table["top_outlier_theory"].eq("1.000+0.000j").all()
    order = [(REGIME_ORDER.index(r), g, i) for r, g, i in
             zip(table["predicted"], table["gbar_ee"], table["gbar_ie"])]
    assert order == sorted(order)  # by predicted regime, then parameters
    assert "Agreement: 2/4" in notes(table)
    paths = plot(table, results, tmp_path)
    assert {p.name for p in paths} == {"confusion.png", "phase_diagram.png"}
    assert all(p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("dim, n_exc", [(1, 800), (2, 400)])
def test_fourier_fit_loss_equals_the_time_domain_loss(dim, n_exc):
    from tasks.ei_network.data import run_dynamics
    from tasks.ei_network.inference import (
        MeanFieldFit,
        fit_loss,
        mean_field_input,
        observed_input,
    )

    c = Config(preset="wave", dim=dim, n_exc=n_exc, mode="infer", t_total=100, burn_in=20,
               range_scale=4.0 if dim == 2 else None)  # 2D ×10 at N_E = 400 is refused
    rec = run_dynamics(c, draw_j(c, 0)[0], 0)
    u, phi = observed_input(rec.x, c.dt * c.record_every, c.tau, c.n_exc, c.inh_gain_scale)
    g = torch.tensor([6.0, 7.0, -5.0, -4.0], dtype=torch.float64)
    d = torch.tensor([0.1, 0.12, 0.15, 0.2], dtype=torch.float64)
    direct = fit_loss(u, mean_field_input(phi, g, d, c.n_exc, c.side_exc, c.side_inh, dim),
                      c.n_exc)
    fourier = MeanFieldFit(u, phi, c.n_exc, c.side_exc, c.side_inh, dim).loss(g, d)
    assert float(fourier) == pytest.approx(float(direct), rel=1e-10)


# ------------------------------------------------------------------ slow: 2D reproductions
def _sweep(experiment: str, tmp_path, extra: list[str]) -> pd.DataFrame:
    from conftest import run_cli
    from runner.report import load_results

    proc = run_cli(["-m", f"experiment={experiment}", f"paths.log_dir={tmp_path}",
                    f"paths.data_dir={tmp_path / 'data'}", "progress_bar=false", *extra],
                   cwd=tmp_path, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = load_results(next((tmp_path / "multirun" / "ei_network").iterdir()))
    assert all(r["status"] == "completed" for r in results)
    return summarize(results)


@pytest.fixture(scope="module")
def presets_2d(tmp_path_factory):
    """The six presets in 2D at the CPU size (N_E = 2,500, ranges ×4), seeds 0–2: the
    experiment ei_network/regimes as it stands (18 runs, about 30 min on one core)."""
    return _sweep("ei_network/regimes", tmp_path_factory.mktemp("regimes"), [])


SLOW_PRESETS = list(PRESETS)


def _rows(table: pd.DataFrame, preset: str) -> pd.DataFrame:
    """Return the preset's rows (every seed), checking that all three seeds are there."""
    rows = table[table["preset"] == preset]
    assert len(rows) == 3, table[["preset", "seed"]]
    return rows


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("preset", SLOW_PRESETS)
def test_claim2_preset_regime_agrees_in_2d(presets_2d, preset):
    """Claim 2: the regime classified from the simulation equals the theory's (the paper's)
    label, for every seed."""
    rows = _rows(presets_2d, preset)
    assert (rows["predicted"] == preset).all() and (rows["observed"] == preset).all(), rows[
        ["seed", "predicted", "observed"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("preset", SLOW_PRESETS)
def test_claim1_bulk_radius_within_5_percent_in_2d(presets_2d, preset):
    """Claim 1, bulk: |R_emp − R_th|/R_th < 5% for every seed."""
    rows = _rows(presets_2d, preset)
    assert (rows["R_rel_error"] < 0.05).all(), rows[["seed", "R_theory", "R_empirical"]]


TOP_OUTLIER_XFAIL = pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README ei_network): in 2D at N_E = 2,500 the eigenvalue matched to the chaos "
    "preset's λ* = 1.032 ± 1.734i sits 0.045, 0.106, 0.070 away for seeds 0, 1, 2 (seed 1 "
    "above 0.1); the other five presets ≤ 0.035"))


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("preset", [p if p != "chaos" else pytest.param(p, marks=TOP_OUTLIER_XFAIL)
                                    for p in SLOW_PRESETS])
def test_claim1_top_outlier_within_0_1_in_2d(presets_2d, preset):
    """Claim 1, λ* itself: the eigenvalue assigned to λ* within 0.1 for every seed."""
    rows = _rows(presets_2d, preset)
    assert (rows["top_outlier_dist"] < 0.1).all(), rows[["seed", "top_outlier_dist"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README ei_network, finding 2): in 2D at N_E = 2,500 the worst-matched copies of "
    "degenerate outliers sit 0.118, 0.115, 0.077 (bump), 0.186, 0.170, 0.164 (wave) and 0.091, "
    "0.136, 0.089 (chaos) from λ±(n) for seeds 0, 1, 2"))
def test_claim1_every_outlier_matched_within_0_1_in_2d(presets_2d):
    """Claim 1, every outlier (each copy of a degenerate λ±(n)) within 0.1."""
    assert (presets_2d["outlier_max_dist"] < 0.1).all(), presets_2d[
        ["preset", "seed", "outlier_max_dist"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("preset", ["global_osc", "wave"])
def test_claim3_frequency_within_10_percent_in_2d(presets_2d, preset):
    """Claim 3, time: the simulated dominant frequency within 10% of Im λ*/2π, every seed."""
    rows = _rows(presets_2d, preset)
    err = (rows["f_obs"] - rows["f_pred"]).abs() / rows["f_pred"]
    assert (err < 0.1).all(), rows[["seed", "f_pred", "f_obs"]]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("preset", ["bump", "wave"])
def test_claim3_wavenumber_equals_the_predicted_mode_in_2d(presets_2d, preset):
    """Claim 3, space: the dominant spatial wavenumber |n| equals |n*|, every seed."""
    rows = _rows(presets_2d, preset)
    assert ((rows["n_obs"] - rows["n_pred"]).abs() < 1e-6).all(), rows[
        ["seed", "n_pred", "n_obs"]]


@pytest.mark.slow
def test_coarse_phase_grid_agrees_at_least_80_percent(tmp_path):
    table = _sweep("ei_network/phase_coarse", tmp_path, [])
    assert len(table) == 49
    assert table["match"].mean() >= 0.8, table[~table["match"]]


def test_sparse_bulk_radius_draws_e_and_i_units_in_proportion():
    """The subset radius keeps the E : I proportion: with 990 E units of |λ| = 1 and 10 I units
    of |λ| = 3 on the diagonal, a 100-unit subset holds m_e = 99 E units and 1 I unit, so the
    99th percentile of its 100 values (position 99·0.99 = 98.01) is 1 + 0.01·(3 − 1) = 1.02,
    rescaled by √(N/m) = √10. A subset with more I units (≥ 2 of 100) gives 3·√10, the
    whole matrix 1 (991 E units) or 1.02 (990)."""
    from tasks.ei_network.spectrum import BULK_QUANTILE, sparse_eigenvalues

    assert BULK_QUANTILE == 0.99
    d = torch.cat([torch.ones(990), torch.full((10,), 3.0)]).double()
    top, radius = sparse_eigenvalues(torch.diag(d), k=2, subset=100, n_exc=990, seed=3)
    assert radius == pytest.approx(1.02 * math.sqrt(10.0), rel=1e-12)
    np.testing.assert_allclose(np.abs(top.numpy()), [3.0, 3.0], rtol=1e-8)
    # 991 E units: m_e = round(99.1) = 99, again one I unit in the subset (1.02), while the
    # whole matrix's 99th percentile is 1 (991 of its 1000 values): the radius is the subset's
    d = torch.cat([torch.ones(991), torch.full((9,), 3.0)]).double()
    _, radius = sparse_eigenvalues(torch.diag(d), k=2, subset=100, n_exc=991, seed=3)
    assert radius == pytest.approx(1.02 * math.sqrt(10.0), rel=1e-12)
