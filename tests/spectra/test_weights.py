import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from callbacks.spectra import (
    esd_metrics,
    iter_weight_matrices,
    model_weight_metrics,
    model_weight_spectra,
    singular_values,
    weight_esd,
    weight_metrics,
)

from .helpers import random_orthogonal
from .test_powerlaw import reference_fit

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
            for key in ("alpha", "log_norm", "entropy", "xmin", "num_spikes"):
                assert out[name][key] == pytest.approx(ref[key], rel=1e-9, nan_ok=True)


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
