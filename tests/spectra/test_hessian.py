import re

import pytest
import torch
from torch import nn

from callbacks.spectra import dense_hessian, hessian_eigs, hessian_matvec, hessian_trace


def tiny_problem(gen):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    return model, nn.functional.cross_entropy, (x, y)


def explicit_hessian(model, loss_fn, batch, names=None):
    pattern = None if names is None else "^(" + "|".join(re.escape(n) for n in names) + ")$"
    return dense_hessian(model, loss_fn, batch, params=pattern)


def test_matvec_matches_explicit_hessian(gen):
    model, loss_fn, batch = tiny_problem(gen)
    H = explicit_hessian(model, loss_fn, batch)
    mv, dim = hessian_matvec(model, loss_fn, batch)
    assert dim == H.shape[0] == sum(p.numel() for p in model.parameters())
    for _ in range(3):
        v = torch.randn(dim, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(mv(v), H @ v, rtol=1e-10, atol=1e-12)
    # float32 vectors come back as float32
    assert mv(torch.ones(dim)).dtype == torch.float32


@pytest.mark.parametrize("which", ["LA", "SA"])
def test_hessian_eigs_match_dense(gen, which):
    model, loss_fn, batch = tiny_problem(gen)
    ev = torch.linalg.eigvalsh(explicit_hessian(model, loss_fn, batch))
    ref = ev.flip(0)[:3] if which == "LA" else ev[:3]
    res = hessian_eigs(model, loss_fn, batch, k=3, which=which, tol=1e-8)
    assert res.converged.all()
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=1e-10)


def test_param_subset(gen):
    model, loss_fn, batch = tiny_problem(gen)
    H = explicit_hessian(model, loss_fn, batch, names={"2.weight", "2.bias"})
    mv, dim = hessian_matvec(model, loss_fn, batch, params=r"^2\.")
    assert dim == 6 * 3 + 3
    v = torch.randn(dim, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(mv(v), H @ v, rtol=1e-10, atol=1e-12)
    mv2, dim2 = hessian_matvec(model, loss_fn, batch, params=[model[2].weight])
    assert dim2 == 18
    with pytest.raises(ValueError, match="no parameters selected"):
        hessian_matvec(model, loss_fn, batch, params="lora")


def test_gradient_graph_built_once(gen):
    model, loss_fn, batch = tiny_problem(gen)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    res = hessian_eigs(model, loss_fn, batch, k=2)
    assert len(calls) == 1 and res.n_matvecs > 2


def test_hessian_trace(gen):
    model, loss_fn, batch = tiny_problem(gen)
    true = torch.trace(explicit_hessian(model, loss_fn, batch)).item()
    dim = sum(p.numel() for p in model.parameters())
    exact = hessian_trace(model, loss_fn, batch, n_matvecs=3 * dim)  # sketch spans everything
    assert exact.trace == pytest.approx(true, rel=1e-8)
    ests = [hessian_trace(model, loss_fn, batch, n_matvecs=12, seed=s).trace for s in range(20)]
    assert sum(ests) / 20 == pytest.approx(true, rel=0.15)


def test_nan_loss_rejected(gen):
    model, loss_fn, (x, y) = tiny_problem(gen)
    x = x.clone()
    x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="loss"):
        hessian_matvec(model, loss_fn, (x, y))


def test_dense_hessian_of_least_squares_is_two_xtx_over_n(gen):
    model = nn.Linear(3, 1, bias=False).double()
    x = torch.randn(20, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(20, 1, generator=gen, dtype=torch.float64)
    H = dense_hessian(model, nn.functional.mse_loss, (x, y))
    assert torch.allclose(H, 2 * x.T @ x / 20, atol=1e-12)  # mean((Wx − y)²) is quadratic in W
