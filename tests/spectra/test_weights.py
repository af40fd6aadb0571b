import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.spectra import (
    esd_metrics,
    esd_metrics_batch,
    iter_weight_matrices,
    model_weight_metrics,
    model_weight_spectra,
    singular_values,
    weight_esd,
    weight_metrics,
)
from callbacks.spectra.weights import _mixed_ok

from .helpers import random_orthogonal
from .test_powerlaw import reference_fit, reference_small_fit

WW_FIXTURE = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "weightwatcher.json").read_text())


def matrix_with_singular_values(a: int, b: int, s: torch.Tensor, gen) -> torch.Tensor:
    U = random_orthogonal(a, gen)[:, : s.numel()]
    V = random_orthogonal(b, gen)[:, : s.numel()]
    return (U * s) @ V.T


@pytest.mark.parametrize("method", ["gram", "svd"])
def test_esd_is_squared_singular_values(gen, method):
    s = torch.linspace(0.1, 3.0, 40, dtype=torch.float64)
    W = matrix_with_singular_values(90, 40, s, gen)
    ev = weight_esd(W, method=method)
    torch.testing.assert_close(ev, torch.sort(s**2).values, rtol=1e-10, atol=1e-12)
    # orientation does not matter; normalize divides by the larger dimension N = 90
    torch.testing.assert_close(weight_esd(W.T, method=method), ev, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(weight_esd(W, normalize=True, method=method), ev / 90)


def test_conv_pool_slices_flatten(gen):
    W = torch.randn(12, 5, 3, 2, generator=gen, dtype=torch.float64)
    per_slice = [
        torch.sort(singular_values(W[:, :, i, j]) ** 2).values for i in range(3) for j in range(2)
    ]
    pooled = weight_esd(W)
    assert pooled.shape == (30,)
    torch.testing.assert_close(pooled, torch.sort(0.5 * torch.cat(per_slice)).values)
    sl = weight_esd(W, conv="slices")
    assert sl.shape == (6, 5)
    torch.testing.assert_close(sl[1], 0.5 * per_slice[1])
    fl = weight_esd(W, conv="flatten")
    torch.testing.assert_close(fl, torch.sort(singular_values(W.reshape(12, -1)) ** 2).values)
    with pytest.raises(ValueError, match="allowed values"):
        weight_esd(W, conv="fft")


def test_fused_qkv_split(gen):
    d = 16
    W = torch.randn(d, 3 * d, generator=gen, dtype=torch.float64)  # GPT-2 Conv1D layout
    ev = weight_esd(W, fused_qkv=3)
    assert ev.shape == (3, d)
    for i in range(3):
        torch.testing.assert_close(ev[i], weight_esd(W[:, i * d : (i + 1) * d]))
    evT = weight_esd(W.T.contiguous(), fused_qkv=3)  # nn.MultiheadAttention in_proj layout
    torch.testing.assert_close(evT, ev)
    with pytest.raises(ValueError, match="split"):
        weight_esd(torch.randn(10, 7), fused_qkv=3)
    mets = weight_metrics(W, fused_qkv=3)
    assert isinstance(mets, list) and len(mets) == 3


def ww_entropy(ev: torch.Tensor, n_big: int) -> float:
    sv = ev.sqrt()
    rank = int((sv > sv.max() * n_big * torch.finfo(torch.float64).eps).sum())
    p = ev / ev.sum() + 1e-10
    return float(-(p * p.log()).sum() / math.log(rank + 1e-10))


def test_metric_formulas(gen):
    s = torch.cat(
        [
            torch.tensor([12.0, 7.0], dtype=torch.float64),
            torch.linspace(0.5, 2.0, 38, dtype=torch.float64),
        ]
    )
    W = matrix_with_singular_values(100, 40, s, gen)
    m = weight_metrics(W)
    ev = s**2
    alpha, xmin, d, n_tail = reference_fit(ev)  # the plain-loop fit of the known ESD
    assert m["alpha"] == pytest.approx(alpha, rel=1e-10)
    assert (m["xmin"], m["n_tail"]) == (pytest.approx(xmin, rel=1e-10), n_tail)
    assert m["ks_distance"] == pytest.approx(d, rel=1e-9)
    assert m["sigma"] == pytest.approx((alpha - 1) / math.sqrt(n_tail), rel=1e-10)
    assert m["log_norm"] == pytest.approx(math.log10(ev.sum().item()), rel=1e-10)
    assert m["log_spectral_norm"] == pytest.approx(math.log10(144.0), rel=1e-10)
    assert m["alpha_weighted"] == pytest.approx(alpha * math.log10(144.0), rel=1e-10)
    assert m["stable_rank"] == pytest.approx(ev.sum().item() / 144.0, rel=1e-10)
    assert m["entropy"] == pytest.approx(ww_entropy(ev, 100), rel=1e-8)
    assert m["log_alpha_norm"] == pytest.approx(math.log10((ev**alpha).sum().item()), rel=1e-8)
    assert m["lambda_max"] == pytest.approx(144.0)
    assert (m["N"], m["M"], m["num_evals"]) == (100, 40, 40)


def test_entropy_of_flat_and_two_level_spectra(gen):
    """WeightWatcher's entropy −Σ p log p / log(rank): 1 for a flat spectrum of full rank;
    for p = (1/2, 1/4, 1/4) on rank 3 it is 1.5 log 2 / log 3 (p + 1e-10 shifts it ~1e-9)."""
    flat = weight_metrics(matrix_with_singular_values(30, 12, torch.full((12,), 0.7,
                                                      dtype=torch.float64), gen))
    assert flat["entropy"] == pytest.approx(1.0, abs=1e-8)
    s = torch.tensor([math.sqrt(2.0), 1.0, 1.0], dtype=torch.float64)
    two = esd_metrics(s**2, 30, 3)
    assert two["entropy"] == pytest.approx(1.5 * math.log(2) / math.log(3), abs=1e-8)


def test_num_spikes_of_a_spiked_random_weight(gen):
    N, M = 400, 100
    W = torch.randn(N, M, generator=gen, dtype=torch.float64) * 0.05
    u = torch.randn(N, 3, generator=gen, dtype=torch.float64)
    v = torch.randn(M, 3, generator=gen, dtype=torch.float64)
    W_spiked = W + (u * torch.tensor([1.0, 1.5, 2.0], dtype=torch.float64)) @ v.T * 0.05
    assert weight_metrics(W_spiked)["num_spikes"] == 3
    assert weight_metrics(W)["num_spikes"] <= 1


def test_iter_weight_matrices_layer_set():
    model = nn.Sequential(
        nn.Linear(20, 30),
        nn.LayerNorm(30),
        nn.Linear(30, 4),
        nn.Linear(4, 4),
        nn.Conv2d(3, 2, 3),
        nn.Embedding(50, 16),
    )
    names = [n for n, _ in iter_weight_matrices(model)]
    # Linear(4, 4): M=4 < 8 evals -> skipped; LayerNorm -> skipped; Conv2d: M*rf = 2*9 = 18 kept
    assert names == ["0", "4", "5"]
    assert [n for n, _ in iter_weight_matrices(model, pattern="^[45]$")] == ["4", "5"]


def test_tied_weight_yielded_once_when_asked():
    emb, head = nn.Embedding(40, 16), nn.Linear(16, 40, bias=False)
    head.weight = emb.weight  # an LM head tied to its embedding
    model = nn.Sequential(emb, nn.Linear(16, 16), head)
    assert [n for n, _ in iter_weight_matrices(model)] == ["0", "1", "2"]  # WeightWatcher's set
    assert [n for n, _ in iter_weight_matrices(model, skip_tied=True)] == ["0", "1"]


def test_model_weight_spectra_gives_the_esd_behind_the_metrics(gen):
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 48), nn.Linear(48, 48))
    spectra = model_weight_spectra(model)
    assert list(spectra) == ["0", "1", "2"]
    for name, mod in model.named_children():
        evals, metrics = spectra[name]
        ref = weight_esd(mod.weight.detach().double())
        assert evals.shape == (48,)
        assert torch.all(evals[1:] >= evals[:-1])  # ascending
        assert torch.allclose(evals.double(), ref, rtol=1e-4, atol=1e-5 * float(ref[-1]))
        # the metrics belong to this layer's weight (independent norms of the same W)
        w = mod.weight.detach().double()
        fro2, top2 = float(w.square().sum()), float(torch.linalg.matrix_norm(w, 2) ** 2)
        assert metrics["log_norm"] == pytest.approx(math.log10(fro2), rel=1e-6)
        assert metrics["lambda_max"] == pytest.approx(top2, rel=1e-5)
        assert metrics["stable_rank"] == pytest.approx(fro2 / top2, rel=1e-5)
        assert metrics["alpha"] == pytest.approx(reference_fit(evals.double())[0], rel=1e-9)


def test_model_weight_metrics_matches_per_layer(gen):
    model = nn.Sequential(
        nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 48), nn.Linear(48, 48), nn.Conv2d(8, 16, 3)
    ).double()
    out = model_weight_metrics(model)
    assert list(out) == ["0", "2", "3", "4"]
    for name, mod in model.named_children():
        if name in out:
            ref = weight_metrics(mod.weight.detach())
            # "0" (48x64) and "2", "3" (48x48) share M = 48: their fits run in one pooled batch
            for key in ("alpha", "log_norm", "entropy", "xmin", "num_spikes", "mp_edge",
                        "mp_sigma2", "N", "M"):
                assert out[name][key] == pytest.approx(ref[key], rel=1e-9, nan_ok=True)


def test_batch_metrics_with_one_n_per_row_equal_the_row_by_row_metrics(gen):
    """Rows of weights with different N but the same M: the MP edge (1 + √(M/N))² and the
    entropy's rank tolerance σ_max·N·ε must use each row's own N."""
    M, Ns = 30, [30, 45, 200]
    E = torch.stack([torch.linalg.svdvals(torch.randn(n, M, generator=gen, dtype=torch.float64))
                     .square().flip(0) for n in Ns])
    E[1, :3] = 0.0  # a rank-deficient row: the rank rule decides the entropy
    batch = esd_metrics_batch(E, Ns, M)
    for row, n, got in zip(E, Ns, batch, strict=True):
        ref = esd_metrics(row, n, M)
        assert got == pytest.approx(ref, rel=1e-12, nan_ok=True)
        assert got["N"] == n
    assert batch[0]["mp_edge"] != pytest.approx(esd_metrics(E[0], Ns[2], M)["mp_edge"], rel=1e-3)
    with pytest.raises(ValueError, match=r"N must be one int or 3 ints >= M=30"):
        esd_metrics_batch(E, [30, 29, 200], M)
    with pytest.raises(ValueError, match=r"N must be one int or 3 ints >= M=30"):
        esd_metrics_batch(E, [30, 45], M)


def test_against_weightwatcher(gen):
    ww = pytest.importorskip("weightwatcher")
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    model = nn.Sequential(nn.Linear(200, 150), nn.ReLU(), nn.Linear(150, 150), nn.Conv2d(16, 24, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.distributions.StudentT(3.0).sample(p.shape) * 0.05)
    details = ww.WeightWatcher(model=model).analyze()
    ours = model_weight_metrics(model, precision="float64")  # the float64 reference
    mixed = model_weight_metrics(model)  # default: float32 eigenvalues for float32 weights
    assert len(details) == len(ours) == len(mixed) == 3
    for (_, row), (name, m) in zip(details.iterrows(), ours.items(), strict=True):
        assert str(row["name"]) == name.split(".")[-1]
        for ww_key, key in [
            ("alpha", "alpha"),
            ("D", "ks_distance"),
            ("xmin", "xmin"),
            ("log_norm", "log_norm"),
            ("log_spectral_norm", "log_spectral_norm"),
            ("alpha_weighted", "alpha_weighted"),
            ("stable_rank", "stable_rank"),
            ("entropy", "entropy"),
            ("num_pl_spikes", "n_tail"),
        ]:
            assert m[key] == pytest.approx(float(row[ww_key]), rel=1e-6), (name, key)
        # the default precision policy stays within the documented accuracy of the float64 one
        assert abs(mixed[name]["alpha"] - float(row["alpha"])) <= 5e-3, name
        for key in ("log_norm", "log_spectral_norm", "stable_rank", "entropy"):
            assert mixed[name][key] == pytest.approx(m[key], rel=1e-5), (name, key)


def test_default_precision_falls_back_to_float64_when_float32_cannot_resolve(gen):
    model = nn.Sequential(nn.Linear(64, 48), nn.Linear(48, 48))
    with torch.no_grad():  # layer 1 has rank 8: float32 cannot resolve its zero eigenvalues
        u = torch.randn(48, 8, generator=gen)
        model[1].weight.copy_(u @ torch.randn(8, 48, generator=gen))
    auto = model_weight_metrics(model)
    ref = model_weight_metrics(model, precision="float64")
    for key in ("alpha", "entropy", "xmin", "log_norm"):
        assert auto["1"][key] == pytest.approx(ref["1"][key], rel=1e-12, nan_ok=True), key
        assert auto["0"][key] == pytest.approx(ref["0"][key], rel=1e-4, nan_ok=True), key


def frozen_matrix(layer: dict) -> np.ndarray:
    """Regenerate a fixture matrix (numpy's legacy RandomState: a frozen stream)."""
    rs = np.random.RandomState(layer["seed"])
    shape = tuple(layer["shape"])
    if layer["dist"] == "normal":
        return rs.standard_normal(shape) * layer["scale"]
    return rs.standard_t(float(layer["dist"][1:]), shape) * layer["scale"]


def frozen_expected(layer: dict) -> dict[str, float]:
    """Our metric names -> WeightWatcher's values. For a small-N layer the power-law values come
    from WeightWatcher's small-sample routine at its own argmin of J = D − 0.868/√n (the rule
    we follow; ``analyze()`` reports the argmin-D candidate: see the fixture's note)."""
    ww = layer["ww"]
    out = {"alpha": ww["alpha"], "xmin": ww["xmin"], "ks_distance": ww["D"],
           "n_tail": ww["num_pl_spikes"], "sigma": ww["sigma"], "log_norm": ww["log_norm"],
           "log_spectral_norm": ww["log_spectral_norm"], "alpha_weighted": ww["alpha_weighted"],
           "log_alpha_norm": ww["log_alpha_norm"], "stable_rank": ww["stable_rank"],
           "entropy": ww["entropy"], "lambda_max": ww["lambda_max"],
           "num_evals": ww["num_evals"], "N": ww["N"], "M": ww["M"]}
    small = layer.get("small_n")
    if small is not None:
        i = small["argmin_J"]
        alpha, n = small["alphas"][i], ww["num_evals"] - i
        out.update(alpha=alpha, xmin=small["xmins"][i], ks_distance=small["Ds"][i], n_tail=n,
                   sigma=(alpha - 1) / math.sqrt(n),
                   alpha_weighted=alpha * ww["log_spectral_norm"])
        del out["log_alpha_norm"]  # Σ λ^α at WeightWatcher's other alpha
    return out


@pytest.mark.parametrize("name", sorted(WW_FIXTURE["layers"]))
def test_against_frozen_weightwatcher_values(name):
    """weight_metrics equals WeightWatcher 0.7.7's analyze() on the fixture's matrices
    (tests/fixtures/weightwatcher.json, made by scripts/make_weightwatcher_fixture.py).

    Tolerance rel 1e-10 (D: also abs 1e-12): both sides work in float64 on the same float32
    weights; WeightWatcher takes scipy's SVD, we eigvalsh of the Gram, which agree to ~1e-15
    relative at the top of the ESD (measured: every metric within 1e-13). A changed formula (a
    dropped small-sample term, another log base, an off-by-one tail) moves them by > 1e-4.
    """
    layer = WW_FIXTURE["layers"][name]
    W = frozen_matrix(layer)
    assert W.sum() == pytest.approx(layer["checksum"]["sum"], rel=1e-12, abs=1e-12)
    assert np.square(W).sum() == pytest.approx(layer["checksum"]["sum_sq"], rel=1e-12)
    ours = weight_metrics(torch.from_numpy(W).float().double())  # WeightWatcher's float32 cast
    if "small_n" in layer:  # the case moves xmin through the -0.868/√n term
        assert layer["small_n"]["argmin_J"] != layer["small_n"]["argmin_D"]
    for key, expected in frozen_expected(layer).items():
        assert ours[key] == pytest.approx(expected, rel=1e-10, abs=1e-12), (name, key)


def test_bad_weight_shapes_and_split_options_name_the_layer():
    """Each refused input raises ValueError naming the layer, the option and the value."""
    W = torch.randn(8, 24, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^attn: fused_qkv must be >= 1, got 0$"):
        weight_esd(W, fused_qkv=0, name="attn")
    with pytest.raises(ValueError, match=r"^attn: qkv_dim must be 0 or 1, got 2$"):
        weight_esd(W, fused_qkv=3, qkv_dim=2, name="attn")
    with pytest.raises(ValueError, match=r"^attn: cannot split dim 0 of shape \(8, 24\) into "
                                         r"fused_qkv=3 pieces$"):
        weight_esd(W, fused_qkv=3, qkv_dim=0, name="attn")
    with pytest.raises(ValueError, match=r"^conv: fused_qkv needs a 2-D weight, got shape "
                                         r"\(4, 3, 2, 2\)$"):
        weight_esd(torch.randn(4, 3, 2, 2, dtype=torch.float64), fused_qkv=3, name="conv")
    with pytest.raises(ValueError, match=r"^w5: weight must be 2-D, 3-D or 4-D, got shape "
                                         r"\(2, 2, 2, 2, 2\)$"):
        weight_esd(torch.randn(2, 2, 2, 2, 2, dtype=torch.float64), name="w5")
    # fused_qkv = 1 (and None) is the whole matrix; qkv_dim = 1 splits the columns
    torch.testing.assert_close(weight_esd(W, fused_qkv=1), weight_esd(W))
    ev = weight_esd(W, fused_qkv=3, qkv_dim=1)
    torch.testing.assert_close(ev[2], weight_esd(W[:, 16:]))
    # the (3d, d) layout splits its rows by default
    torch.testing.assert_close(weight_esd(W.T, fused_qkv=3)[1], weight_esd(W[:, 8:16].T))


def test_conv1d_slices_have_no_half_factor_and_flatten_or_pool_one_esd(gen):
    """A 3-D weight (out, in, k) is cut into k slices (out, in) with eigenvalues σ² (the ½ is
    WeightWatcher's conv2d_norm, for 4-D only); normalize divides by N = max(out, in)."""
    W = torch.randn(9, 4, 3, generator=gen, dtype=torch.float64)
    per = [torch.sort(singular_values(W[:, :, t]) ** 2).values for t in range(3)]
    sl = weight_esd(W, conv="slices")
    assert sl.shape == (3, 4)
    for t in range(3):
        torch.testing.assert_close(sl[t], per[t])
    torch.testing.assert_close(weight_esd(W), torch.sort(torch.cat(per)).values)
    torch.testing.assert_close(weight_esd(W, normalize=True), torch.sort(torch.cat(per)).values / 9)
    W4 = torch.randn(4, 9, 2, 1, generator=gen, dtype=torch.float64)  # out < in: N = 9
    ev4 = weight_esd(W4, normalize=True, conv="slices")
    torch.testing.assert_close(ev4[1], 0.5 * torch.sort(singular_values(W4[:, :, 1, 0]) ** 2).values
                               / 9)
    svd = weight_esd(W4, conv="slices", method="svd")
    torch.testing.assert_close(svd, weight_esd(W4, conv="slices"), rtol=1e-10, atol=1e-12)
    mets = weight_metrics(W4, conv="slices")
    assert len(mets) == 2 and (mets[0]["N"], mets[0]["M"]) == (9, 4)
    assert mets[1]["lambda_max"] == pytest.approx(float(svd[1, -1]), rel=1e-10)
    with pytest.raises(ValueError, match=r"^method='qr' is not allowed; allowed values: "
                                         r"\['gram', 'svd'\]$"):
        weight_esd(W, method="qr")
    with pytest.raises(ValueError, match=r"^conv='fft' is not allowed; allowed values: "
                                         r"\['pool', 'slices', 'flatten'\]$"):
        weight_esd(W, conv="fft")
    # normalize divides by N = max(out, in), not by the number of slices (25 > N = 4 here)
    W25 = torch.randn(4, 3, 5, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(weight_esd(W25, normalize=True, conv="slices"),
                               weight_esd(W25, conv="slices") / 4)


def test_degenerate_spectra_metrics():
    """A zero spectrum has log norms −inf, stable rank 0 and no entropy; a rank-one one has
    entropy NaN (log rank = 0) and stable rank 1; min_tail and evals_thresh reach the fit."""
    z = esd_metrics(torch.zeros(10, dtype=torch.float64), 20, 10)
    assert z["log_norm"] == float("-inf") and z["log_spectral_norm"] == float("-inf")
    assert z["stable_rank"] == 0.0 and math.isnan(z["entropy"]) and math.isnan(z["alpha"])
    assert math.isnan(z["log_alpha_norm"]) and math.isnan(z["alpha_weighted"])
    one = esd_metrics(torch.tensor([0.0] * 9 + [4.0], dtype=torch.float64), 20, 10)
    assert one["stable_rank"] == 1.0 and math.isnan(one["entropy"])
    assert one["log_spectral_norm"] == pytest.approx(math.log10(4.0))
    ev = torch.cat([torch.linspace(1e-6, 5e-6, 6), torch.linspace(0.5, 3.0, 14)]).double()
    m = esd_metrics(ev, 40, 20)
    assert m["xmin"] > 5e-6  # the six values under WeightWatcher's 1e-5 are not fitted
    low = esd_metrics(ev, 40, 20, evals_thresh=1e-7)
    assert low["xmin"] != m["xmin"] or low["alpha"] != m["alpha"]
    alpha, xmin, _, n_tail = reference_small_fit(ev)  # 14 values > 1e-5: the small-N rule
    assert (m["alpha"], m["xmin"], m["n_tail"]) == (pytest.approx(alpha, rel=1e-10),
                                                    pytest.approx(xmin, rel=1e-12), n_tail)
    wide = esd_metrics(ev, 40, 20, min_tail=12)
    assert wide["n_tail"] >= 12
    # N and M are taken as (max, min) of the two given sizes
    assert esd_metrics(ev, 20, 40)["N"] == 40.0
    with pytest.raises(ValueError, match="spec"):
        esd_metrics(torch.tensor([1.0, float("nan")]), 4, 2, name="spec")


def test_iter_weight_matrices_size_filters_and_class_names():
    """min_evals ≤ M·rf ≤ max_evals and N ≤ max_n decide, rf the kernel size; a class whose name
    contains conv1d (transformers' Conv1D) counts, a 1-D weight does not."""

    class Conv1D(nn.Module):  # the transformers GPT-2 layer: weight (in, out)
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 48))

    class ScaleOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(16))

    model = nn.Sequential(nn.Linear(10, 8), nn.Linear(10, 7), nn.Conv2d(2, 4, 2), Conv1D(),
                          ScaleOnly(), nn.Conv1d(3, 5, 3), nn.Linear(200, 9))
    # M·rf: 8, 7, 2·4 = 8, 16, –, 3·3 = 9, 9
    assert [n for n, _ in iter_weight_matrices(model)] == ["0", "2", "3", "5", "6"]
    assert [n for n, _ in iter_weight_matrices(model, min_evals=9)] == ["3", "5", "6"]
    assert [n for n, _ in iter_weight_matrices(model, max_evals=8)] == ["0", "2"]
    assert [n for n, _ in iter_weight_matrices(model, max_n=199)] == ["0", "2", "3", "5"]
    assert [n for n, _ in iter_weight_matrices(model, max_n=200)][-1] == "6"
    for _, w in iter_weight_matrices(model):
        assert not w.requires_grad  # detached views


def test_model_weight_spectra_options_reach_every_layer(gen):
    """conv="flatten", method="svd", precision="float32" (no fallback), min_tail and
    max_evals / min_evals are passed on; layers of equal shape but another dtype are not
    stacked together; bad options name the key."""
    model = nn.Sequential(nn.Linear(40, 30), nn.Linear(40, 30).double(), nn.Conv2d(3, 10, 2))
    flat = model_weight_spectra(model, conv="flatten", precision="float64")
    w2 = model[2].weight.detach().double()
    torch.testing.assert_close(flat["2"][0], torch.sort(singular_values(w2.reshape(10, -1)) ** 2)
                               .values)
    assert (flat["2"][1]["N"], flat["2"][1]["M"]) == (12, 10)
    pooled = model_weight_spectra(model, precision="float64")
    torch.testing.assert_close(pooled["2"][0], weight_esd(w2))
    assert (pooled["2"][1]["N"], pooled["2"][1]["M"]) == (10, 3)
    for nm in ("0", "1"):
        w = model[int(nm)].weight.detach().double()
        torch.testing.assert_close(pooled[nm][0].double(), weight_esd(w), rtol=1e-10, atol=1e-12)
    svd = model_weight_spectra(model, method="svd", precision="float64")
    torch.testing.assert_close(svd["1"][0], pooled["1"][0], rtol=1e-10, atol=1e-12)
    f32 = model_weight_spectra(model, precision="float32")
    assert f32["0"][0].dtype == torch.float32 and f32["1"][0].dtype == torch.float32
    auto = model_weight_spectra(model)
    assert auto["1"][0].dtype == torch.float64  # float64 weights stay float64 under "auto"
    assert auto["0"][0].dtype == torch.float32
    tail = model_weight_spectra(model, min_tail=25, precision="float64")
    assert tail["0"][1]["n_tail"] >= 25 and pooled["0"][1]["n_tail"] < 25
    assert list(model_weight_spectra(model, min_evals=11)) == ["0", "1", "2"]
    assert list(model_weight_spectra(model, max_evals=29)) == ["2"]
    assert list(model_weight_metrics(model, max_evals=29)) == ["2"]
    with pytest.raises(ValueError, match=r"^conv='slices' is not allowed; allowed values: "
                                         r"\['pool', 'flatten'\]$"):
        model_weight_spectra(model, conv="slices")
    with pytest.raises(ValueError, match=r"^precision='half' is not allowed; allowed values: "
                                         r"\['auto', 'float32', 'float64'\]$"):
        model_weight_spectra(model, precision="half")


def test_svd_method_resolves_what_the_gram_loses(gen):
    """σ = 1e-9 beside σ = 1: the float64 Gram's eigenvalue carries an absolute error ~1e-16,
    above σ² = 1e-18 (it comes out 0 after the clamp); method="svd" squares the singular
    value."""
    s = torch.tensor([1.0, 0.5, 1e-9], dtype=torch.float64)
    W = matrix_with_singular_values(20, 3, s, gen)
    assert float(weight_esd(W, method="svd")[0]) == pytest.approx(1e-18, rel=1e-4, abs=0)
    assert float(weight_esd(W, method="gram")[0]) != pytest.approx(1e-18, rel=0.5, abs=0)  # 0 here


def test_fused_split_counts_and_square_default_axis(gen):
    """fused_qkv = 2 splits in two; a square fused matrix splits its rows (dim 0) by default."""
    W = torch.randn(12, 12, generator=gen, dtype=torch.float64)
    two = weight_esd(W, fused_qkv=2)
    assert two.shape == (2, 6)
    torch.testing.assert_close(two[1], weight_esd(W[6:]))
    torch.testing.assert_close(weight_esd(W, fused_qkv=3)[0], weight_esd(W[:4]))


def test_mixed_precision_acceptance_rule_at_its_boundaries():
    """_mixed_ok keeps a float32 ESD unless λ_max ≤ 0, λ_min ≤ (√λ_max · N · ε₆₄)² (the rank
    tolerance) or xmin ≤ 100 · M · ε₃₂ · λ_max; each boundary tested at equality and past it."""
    e32, e64 = torch.finfo(torch.float32).eps, torch.finfo(torch.float64).eps
    N = 50
    lam = 4.0
    tol2 = (math.sqrt(lam) * N * e64) ** 2
    ev = torch.tensor([1.0, 2.0, 3.0, lam], dtype=torch.float64)
    floor = 4 * e32 * lam
    assert _mixed_ok(ev, N, 1.0)
    assert _mixed_ok(ev, N, float("nan")) and _mixed_ok(ev, N, float("inf"))
    assert not _mixed_ok(ev, N, 100.0 * floor)  # at the xmin bound
    assert _mixed_ok(ev, N, 100.0 * floor * (1 + 1e-9))
    assert not _mixed_ok(ev, N, 100.5 * floor / 1.01)  # 99.5 · floor
    at = torch.tensor([tol2, 2.0, 3.0, lam], dtype=torch.float64)
    assert not _mixed_ok(at, N, 1.0)  # λ_min at the rank tolerance
    assert _mixed_ok(torch.tensor([tol2 * 1.01, 2.0, 3.0, lam], dtype=torch.float64), N, 1.0)
    # only λ_min decides (λ_2 far above it); λ_max is the last value, not the one before it
    assert not _mixed_ok(torch.tensor([0.0, 2.0, 3.0, lam], dtype=torch.float64), N, 1.0)
    big = torch.tensor([1.0, 1.0, 1.0, 1e6], dtype=torch.float64)  # floor from λ_max = 1e6
    assert not _mixed_ok(big, N, 100.0 * 4 * e32 * 1e6 * 0.99)
    assert _mixed_ok(torch.tensor([1e-20, 1e-20, 1e-20, 1e-3], dtype=torch.float64), 2, 1.0)
    assert not _mixed_ok(torch.zeros(4, dtype=torch.float64), N, 1.0)
    assert not _mixed_ok(torch.tensor([-1.0, -0.5], dtype=torch.float64), N, 1.0)
    assert _mixed_ok(torch.tensor([0.25, 0.5], dtype=torch.float64), N, 0.3)  # λ_max < 1


def test_entropy_rank_rule_and_scale():
    """Rank by σ > σ_max·N·ε₆₄ on √λ of the ESD itself (no clamp at 1); entropy of p ∝ λ
    is scale free (a total below 1 is fine); rank 2 is allowed (log 2 > 0)."""
    flat_small = esd_metrics(torch.full((5,), 0.1, dtype=torch.float64), 10, 5)  # total 0.5
    assert flat_small["entropy"] == pytest.approx(1.0, abs=1e-8)
    assert flat_small["log_norm"] == pytest.approx(math.log10(0.5), rel=1e-12)
    assert flat_small["stable_rank"] == pytest.approx(5.0, rel=1e-12)
    two = esd_metrics(torch.tensor([0.0, 0.0, 0.25, 0.25], dtype=torch.float64), 10, 4)
    assert two["entropy"] == pytest.approx(1.0, abs=1e-7)  # rank 2: p = (½, ½)
    # 1e-30 has σ = 1e-15 < σ_max · N · ε₆₄ = 1 · 100 · 2.2e-16: not counted in the rank
    tiny = esd_metrics(torch.tensor([1e-30, 1.0, 1.0], dtype=torch.float64), 100, 3)
    assert tiny["entropy"] == pytest.approx(1.0, abs=1e-7)


def test_weight_metrics_passes_its_options_to_the_esd(gen):
    """normalize, method, qkv_dim, min_tail reach the ESD and the fit."""
    W = torch.randn(60, 20, generator=gen, dtype=torch.float64)
    plain, norm = weight_metrics(W), weight_metrics(W, normalize=True)
    assert norm["log_norm"] == pytest.approx(plain["log_norm"] - math.log10(60), rel=1e-10)
    assert norm["alpha"] == pytest.approx(plain["alpha"], rel=1e-9)
    s = torch.tensor([1.0, 0.5, 1e-9], dtype=torch.float64)
    Wi = matrix_with_singular_values(20, 3, s, gen)  # the Gram loses σ² = 1e-18, svd keeps it
    m_svd, m_gram = weight_metrics(Wi, method="svd"), weight_metrics(Wi)
    p = torch.tensor([1e-18, 0.25, 1.0], dtype=torch.float64) / 1.25 + 1e-10
    assert m_svd["entropy"] == pytest.approx(float(-(p * p.log()).sum() / math.log(3)), rel=1e-9)
    # the MP bulk fit sees the smallest eigenvalue: svd resolves σ² = 1e-18; the Gram gives
    # rounding noise of order ε·λ_max, or 0 where the noise came out negative (its sign depends
    # on the BLAS, so the entropy's rank, and the entropy, may or may not differ)
    assert m_svd["mp_sigma2"] == pytest.approx(1e-18, rel=1e-6, abs=0)
    assert m_gram["mp_sigma2"] != pytest.approx(1e-18, rel=1e-3, abs=0)
    F = torch.randn(10, 30, generator=gen, dtype=torch.float64)
    rows = weight_metrics(F, fused_qkv=3, qkv_dim=1)
    assert rows[2]["log_norm"] == pytest.approx(math.log10(float(F[:, 20:].square().sum())))
    assert rows[0]["M"] == 10
    assert weight_metrics(W, min_tail=15)["n_tail"] >= 15 > plain["n_tail"]
    sl = weight_metrics(torch.randn(20, 9, 2, 1, generator=gen, dtype=torch.float64),
                        conv="slices", min_tail=8)
    assert min(m["n_tail"] for m in sl) >= 8
    with pytest.raises(ValueError, match=r"^weight has non-finite entries \(1 NaN"):
        weight_metrics(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_iter_weight_matrices_default_bounds_and_module_kinds():
    """WeightWatcher's defaults at equality: M·rf = 8 and 15000 kept, 15001 not; N = 50000
    kept, 50001 not. A subclass of nn.Linear counts whatever its name; a module of another
    kind with a 2-D weight does not; a container named like a layer without a weight is passed
    over; a layer-named module with a 1-D or no weight is skipped."""

    class Dense(nn.Linear):
        pass

    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(16, 16))

    class LinearStack(nn.Module):  # a "linear" container: no weight of its own
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(16, 12)

    class LinearScale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(16))

    class EmbeddingLike(nn.Module):
        weight = None

    model = nn.ModuleDict({
        "m8": nn.Linear(20, 8), "dense": Dense(16, 12), "gate": Gate(), "stack": LinearStack(),
        "scale": LinearScale(), "none": EmbeddingLike(),
        "k15000": nn.Conv1d(1, 8, 15000, bias=False), "k15001": nn.Conv1d(1, 8, 15001, bias=False),
        "n50000": nn.Linear(50000, 8, bias=False), "n50001": nn.Linear(50001, 8, bias=False),
    })
    names = [n for n, _ in iter_weight_matrices(model)]
    assert names == ["m8", "dense", "stack.inner", "k15000", "n50000"]


def test_model_weight_spectra_pattern_tied_and_bad_layers(gen):
    """pattern and skip_tied are passed on (model_weight_metrics too); float32 precision keeps a
    low-rank layer in float32 (no fallback); method="svd" reaches 2-D layers; a NaN layer is
    refused with its module name."""
    emb, head = nn.Embedding(40, 16), nn.Linear(16, 40, bias=False)
    head.weight = emb.weight
    model = nn.Sequential(emb, nn.Linear(16, 16), head)
    assert list(model_weight_spectra(model)) == ["0", "1", "2"]
    assert list(model_weight_spectra(model, skip_tied=True)) == ["0", "1"]
    assert list(model_weight_spectra(model, pattern="^[12]$")) == ["1", "2"]
    assert list(model_weight_metrics(model, "^[12]$", skip_tied=True)) == ["1", "2"]
    low = nn.Sequential(nn.Linear(48, 48))
    with torch.no_grad():
        low[0].weight.copy_(torch.randn(48, 4, generator=gen) @ torch.randn(4, 48, generator=gen))
    assert model_weight_spectra(low, precision="float32")["0"][0].dtype == torch.float32
    assert model_weight_spectra(low)["0"][0].dtype == torch.float64  # the fallback under auto
    s = torch.cat([torch.tensor([1e-9], dtype=torch.float64), torch.linspace(0.5, 2, 9).double()])
    ill = nn.Sequential(nn.Linear(10, 30).double())
    with torch.no_grad():
        ill[0].weight.copy_(matrix_with_singular_values(30, 10, s, gen))
    ev = model_weight_spectra(ill, method="svd")["0"][0]
    assert float(ev[0]) == pytest.approx(1e-18, rel=1e-4, abs=0)
    conv = nn.Sequential(nn.Conv2d(3, 10, 2).double())
    with torch.no_grad():
        conv[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^0 has non-finite entries \(1 NaN"):
        model_weight_spectra(conv)


def test_metrics_details_left_by_the_first_mutation_runs(gen):
    """The MP fit's σ² and edge are those of mp_bulk_fit on the same ESD; float32 eigenvalues are
    analysed in float64; the entropy divides by log(rank + 1e-10) exactly; weight_metrics hands
    its name, qkv_dim and min_tail to every piece; default names in the messages."""
    from callbacks.spectra import mp_bulk_fit

    W = torch.randn(80, 30, generator=gen, dtype=torch.float64)
    ev = weight_esd(W)
    m = esd_metrics(ev, 80, 30)
    sigma2, edge, spikes = mp_bulk_fit(ev, 80, 30)
    assert (m["mp_sigma2"], m["mp_edge"], m["num_spikes"]) == (sigma2, edge, float(spikes))
    ev32 = ev.float()
    m32, m64 = esd_metrics(ev32, 80, 30), esd_metrics(ev32.double(), 80, 30)
    for key in ("entropy", "log_alpha_norm", "alpha", "stable_rank"):
        assert m32[key] == m64[key], key
    two = esd_metrics(torch.tensor([0.0, 0.0, 0.25, 0.25], dtype=torch.float64), 10, 4)
    p = torch.tensor([0.0, 0.0, 0.5, 0.5], dtype=torch.float64) + 1e-10
    assert two["entropy"] == pytest.approx(float(-(p * p.log()).sum()) / math.log(2 + 1e-10),
                                           rel=1e-13, abs=0)
    F = torch.randn(12, 36, generator=gen, dtype=torch.float64)
    rows = weight_metrics(F, fused_qkv=3, qkv_dim=0)  # three (4, 36) pieces, not (12, 12)
    assert (rows[1]["N"], rows[1]["M"]) == (36, 4)
    assert rows[1]["log_norm"] == pytest.approx(math.log10(float(F[4:8].square().sum())))
    whole = weight_metrics(torch.randn(10, 30, generator=gen, dtype=torch.float64), fused_qkv=3)
    assert (whole[0]["N"], whole[0]["M"]) == (10, 10)
    with pytest.raises(ValueError, match=r"^attn: fused_qkv must be >= 1, got 0$"):
        weight_metrics(F, fused_qkv=0, name="attn")
    with pytest.raises(ValueError, match=r"^conv: fused_qkv needs a 2-D weight"):
        weight_esd(torch.randn(4, 3, 2, 2, dtype=torch.float64), fused_qkv=2, name="conv")
    C = torch.randn(30, 20, 2, 1, generator=gen, dtype=torch.float64)
    sl, sl15 = weight_metrics(C, conv="slices"), weight_metrics(C, conv="slices", min_tail=15)
    assert all(a["n_tail"] < 15 <= b["n_tail"] for a, b in zip(sl, sl15, strict=True))
    with pytest.raises(ValueError, match=r"^evals has non-finite entries"):
        esd_metrics(torch.tensor([1.0, float("nan")]), 4, 2)
    with pytest.raises(ValueError, match=r"^weight has non-finite entries"):
        weight_esd(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))


def test_model_weight_spectra_conv1d_fallback_and_conv_options(gen):
    """A Conv1d layer (3-D weight) goes through weight_esd, not the 2-D stack; M = 8 is kept by
    default; the float64 fallback keeps min_tail; method and precision reach conv layers; a
    tied weight before other layers does not end the listing."""
    model = nn.Sequential(nn.Linear(20, 8), nn.Conv1d(4, 9, 3), nn.Linear(48, 48),
                          nn.Conv2d(3, 10, 2)).double()
    with torch.no_grad():
        model[2].weight.copy_(torch.randn(48, 30, generator=gen, dtype=torch.float64)
                              @ torch.randn(30, 48, generator=gen, dtype=torch.float64))
    out = model_weight_spectra(model)
    assert list(out) == ["0", "1", "2", "3"]
    torch.testing.assert_close(out["1"][0], weight_esd(model[1].weight.detach()))
    assert (out["1"][1]["N"], out["1"][1]["M"]) == (9, 4)
    f32 = model_weight_spectra(model.float(), precision="float32")
    assert f32["3"][0].dtype == torch.float32 and f32["1"][0].dtype == torch.float32
    low = model_weight_spectra(model, min_tail=20)  # layer 2: rank 30, float32 → float64 fallback
    assert low["2"][0].dtype == torch.float64 and low["2"][1]["n_tail"] >= 20
    conv = nn.Sequential(nn.Conv2d(2, 12, (2, 1)).double())
    s = torch.cat([torch.tensor([1e-9], dtype=torch.float64), torch.linspace(0.5, 2, 1).double()])
    with torch.no_grad():
        for i in range(2):
            conv[0].weight[:, :, i, 0] = matrix_with_singular_values(12, 2, s, gen)
    ev = model_weight_spectra(conv, method="svd", min_evals=1)["0"][0]
    assert float(ev[0]) == pytest.approx(0.5e-18, rel=1e-4, abs=0)  # σ² · ½ (conv2d_norm)
    emb, head = nn.Embedding(40, 16), nn.Linear(16, 40, bias=False)
    head.weight = emb.weight
    tied = nn.Sequential(emb, head, nn.Linear(16, 16))
    assert [n for n, _ in iter_weight_matrices(tied, skip_tied=True)] == ["0", "2"]
