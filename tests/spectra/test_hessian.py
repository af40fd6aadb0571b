import pytest
import torch
from torch import nn
from torch.func import functional_call

from callbacks.spectra import hessian_eigs, hessian_matvec, hessian_trace


def tiny_problem(gen):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    x = torch.randn(10, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=gen)
    return model, nn.functional.cross_entropy, (x, y)


def explicit_hessian(model, loss_fn, batch, names=None):
    x, y = batch
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    flat = torch.cat([p.detach().reshape(-1) for _, p in named])

    def loss_of(theta):
        d, i = {}, 0
        for n, p in named:
            d[n] = theta[i : i + p.numel()].view_as(p)
            i += p.numel()
        return loss_fn(functional_call(model, d, (x,)), y)

    return torch.autograd.functional.hessian(loss_of, flat)


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
