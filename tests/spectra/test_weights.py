import math

import pytest
import torch
from torch import nn

from callbacks.spectra import (
    iter_weight_matrices,
    model_weight_metrics,
    model_weight_spectra,
    singular_values,
    weight_esd,
    weight_metrics,
)

from .helpers import random_orthogonal


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
    assert m["log_norm"] == pytest.approx(math.log10(ev.sum().item()), rel=1e-10)
    assert m["log_spectral_norm"] == pytest.approx(math.log10(144.0), rel=1e-10)
    assert m["alpha_weighted"] == pytest.approx(m["alpha"] * math.log10(144.0), rel=1e-10)
    assert m["stable_rank"] == pytest.approx(ev.sum().item() / 144.0, rel=1e-10)
    assert m["entropy"] == pytest.approx(ww_entropy(ev, 100), rel=1e-8)
    assert m["log_alpha_norm"] == pytest.approx(
        math.log10((ev ** m["alpha"]).sum().item()), rel=1e-8
    )
    assert m["lambda_max"] == pytest.approx(144.0)
    assert 0 < m["n_tail"] <= 40 and 0 <= m["ks_distance"] <= 1
    assert {"alpha", "xmin", "ks_distance", "n_tail", "num_spikes"} <= set(m)


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
        assert metrics == model_weight_metrics(model)[name]


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
